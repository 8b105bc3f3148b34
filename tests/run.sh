#!/usr/bin/env sh
# The whole test suite on a fresh Debian machine: installs what the tests need
# beyond Python packages (Chromium and its driver, for the serving page's
# browser test) when it is missing, then runs pytest. Arguments go to pytest.
set -eu
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "installing chromium and chromium-driver for the browser test (apt)" >&2
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium chromium-driver
fi
exec python3 -m pytest -q tests "$@"
