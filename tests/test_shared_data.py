"""Tests that need ../shared are skipped with their reason in a bare clone, and fail in CI."""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

# A test that reads the CIFAR-10 archive through its fixture (set-up ends it here).
NEEDS_ARCHIVE = "tests/data/test_pipeline.py::test_cifar10_jpeg_test_split"


def run_without_the_archive(tmp_path, ci):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["KERAS_ROBUST_CIFAR10"] = str(tmp_path / "absent.tar.gz")
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", NEEDS_ARCHIVE],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_missing_data_skips_with_its_reason_outside_ci_and_fails_in_ci(tmp_path):
    bare = run_without_the_archive(tmp_path, ci=False)
    assert bare.returncode == 0 and "1 skipped" in bare.stdout, bare.stdout[-2000:]
    assert "absent.tar.gz" in bare.stdout and "KERAS_ROBUST_CIFAR10" in bare.stdout
    in_ci = run_without_the_archive(tmp_path, ci=True)
    assert in_ci.returncode != 0 and "1 error" in in_ci.stdout, in_ci.stdout[-2000:]
