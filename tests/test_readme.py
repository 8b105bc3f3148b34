"""Every README snippet runs as written, and every README command line parses."""

import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_the_demo_and_the_test_command():
    first = BASH_BLOCKS[0]
    assert "pip install -e . && keras-robust demo" in first
    assert 'pip install -e ".[dev]" && tests/run.sh' in first
    ci = (REPO_ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == 'pip install -e ".[dev]" && tests/run.sh'


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_snippet_runs_as_written(index, tmp_path, request):
    code = PYTHON_BLOCKS[index]
    if "../shared/data/cifar10-jpeg.tar.gz" in code:
        code = code.replace("../shared/data/cifar10-jpeg.tar.gz", str(request.getfixturevalue("cifar10_archive")))
    completed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                               timeout=600, env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3",
                                                 "HOME": str(tmp_path)})
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Warning" not in completed.stderr.replace("DeprecationWarning", ""), completed.stderr[-3000:]


def test_every_command_line_parses():
    from keras_robust.cli.parser import build_parser

    parser = build_parser(with_serve_limits=True)
    lines = [line.split("  #")[0].strip() for block in BASH_BLOCKS for line in block.splitlines()]
    commands = [shlex.split(line.split("&& ")[-1]) for line in lines if "keras-robust " in line]
    assert len(commands) >= 10
    for words in commands:
        assert words[0] == "keras-robust", words
        parser.parse_args(words[1:])
