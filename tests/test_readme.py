"""Every README snippet runs as written, and every README command line parses."""

import contextlib
import io
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
    # A line commented "# prints X" states its output: the snippet's printed lines must be these, in order.
    stated = re.findall(r"^print\(.*#\s*prints (.*)$", code, flags=re.M)
    printed = completed.stdout.splitlines()
    assert [line for line in printed if line in stated] == stated, completed.stdout[-3000:]


def test_readme_states_each_printed_result_on_lines_the_snippet_test_checks():
    stated = [line for block in PYTHON_BLOCKS for line in block.splitlines() if "# prints " in line]
    assert stated and all(line.startswith("print(") for line in stated)
    assert "RMSE(δ) = rho" not in README


@pytest.mark.multiprocess
def test_the_fast_subset_counts_are_the_suites():
    stated = re.search(r'`tests/run.sh -m "not slow"` runs the fast subset \((\d+) of\s+the (\d+) tests', README)
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not slow", "tests"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    counted = re.search(r"^(\d+)/(\d+) tests collected", collected.stdout, flags=re.M)
    assert counted, collected.stdout[-2000:]
    assert stated.groups() == counted.groups(), "update the README's counts of the fast subset and the suite"


def test_every_command_line_parses():
    from keras_robust.cli.parser import build_parser

    parser = build_parser(with_serve_limits=True)
    lines = [line.split("  #")[0].strip() for block in BASH_BLOCKS for line in block.splitlines()]
    commands = [shlex.split(line.split("&& ")[-1]) for line in lines if "keras-robust " in line]
    assert len(commands) >= 10
    for words in commands:
        assert words[0] == "keras-robust", words
        parser.parse_args(words[1:])


@pytest.mark.slow
def test_the_demo_captions_state_what_the_networks_do():
    """The README's captions of the demo figures, checked against the shipped networks."""
    import numpy as np

    import keras_robust
    from keras_robust.explanations.adversarial import AdversarialExplainer
    from keras_robust.reporting import findings
    from keras_robust.reporting.demo import PROTOTYPE_GREY, sample_images

    images, files, _ = sample_images()
    n3 = keras_robust.pretrained("resnet44-cifar10-all")
    probabilities = n3.predict(images, verbose=0)
    probabilities = np.exp(probabilities) / np.exp(probabilities).sum(axis=1, keepdims=True)
    cat = probabilities[files.index("cat.png")]
    names = keras_robust.pretrained_card("resnet44-cifar10-all")["class_names"]
    assert "it calls the cat\na frog at 0.23" in README
    assert names[int(np.argmax(cat))] == "frog" and round(float(cat.max()), 2) == 0.23
    assert "N1's prototypes (`docs/figures/demo_prototypes_n1.png`) are faint\nnoise" in README
    grey = np.full((1, 32, 32, 3), PROTOTYPE_GREY, "float32")
    variation = {}
    for name in ("resnet44-cifar10-all", "resnet44-cifar10-standard"):
        explainer = AdversarialExplainer(keras_robust.pretrained(name), sanity_check=False)
        variation[name] = findings.relative_total_variation(explainer.explain(grey, np.arange(10)[None]).delta)
    # Noise: neighbouring pixels of δ differ about as much as pixel noise's (√2 of mean |δ|), N3's far less.
    assert variation["resnet44-cifar10-standard"] > 1.0 > 2 * variation["resnet44-cifar10-all"], variation


def test_the_paper_names_and_the_shipped_names_pair_the_same_way_everywhere():
    """N1-N4 beside a shipped network's name, in the README, the docs, the help and the package's text."""
    from keras_robust.cli.parser import build_parser
    from keras_robust.models.zoo.catalog import CATALOG

    demo_help = io.StringIO()
    with contextlib.redirect_stdout(demo_help), pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    texts = [README, demo_help.getvalue()]
    texts += [path.read_text(encoding="utf-8") for path in (REPO_ROOT / "docs").glob("*.md")]
    texts += [path.read_text(encoding="utf-8") for path in (REPO_ROOT / "keras_robust").rglob("*.py")]
    texts += [path.read_text(encoding="utf-8") for path in (REPO_ROOT / "keras_robust").rglob("*.md")]
    name = r"(resnet44-cifar10-[a-z-]*[a-z])"
    pattern = re.compile(rf"\b(N[1-4])[ `(\"]{{1,3}}{name}|{name}[`\"]?[ `(]{{1,3}}(N[1-4])\b")
    pairs = set()
    for text in texts:
        for match in pattern.finditer(text):
            paper, name = (match[1], match[2]) if match[1] else (match[4], match[3])
            pairs.add((name, paper))
    assert {paper for _, paper in pairs} == {"N1", "N2", "N3", "N4"}
    assert pairs <= {(name, entry["paper_name"]) for name, entry in CATALOG.items()}, pairs
