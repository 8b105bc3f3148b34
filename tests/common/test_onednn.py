"""Importing keras_robust before TensorFlow turns TensorFlow's oneDNN kernels on; after, it says why not."""

import json
import os
import subprocess
import sys

import pytest

REPORT = (
    "import json, os, sys, warnings\n"
    "warnings.simplefilter('always')\n"
    "with warnings.catch_warnings(record=True) as caught:\n"
    "    {imports}\n"
    "from tensorflow.python.util import _pywrap_util_port\n"
    "print(json.dumps({{'variable': os.environ.get('TF_ENABLE_ONEDNN_OPTS'),\n"
    "                  'onednn': _pywrap_util_port.IsMklEnabled(),\n"
    "                  'warnings': [str(w.message) for w in caught if 'oneDNN' in str(w.message)]}}))\n"
)


def _report(imports, **variables):
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(variables, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", REPORT.format(imports=imports)], capture_output=True, text=True,
                         env=env, timeout=300, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_imported_first_it_turns_onednn_on():
    report = _report("import keras_robust; import keras")
    assert report == {"variable": "1", "onednn": True, "warnings": []}


@pytest.mark.parametrize("value, enabled", [("0", False), ("1", True)])
def test_an_explicit_setting_wins_and_silences_the_advice(value, enabled):
    report = _report("import keras; import keras_robust", TF_ENABLE_ONEDNN_OPTS=value)
    assert report == {"variable": value, "onednn": enabled, "warnings": []}


def test_imported_after_tensorflow_it_advises_only_where_onednn_is_off():
    report = _report("import tensorflow; import keras_robust")
    assert report["variable"] is None
    if report["onednn"]:  # TensorFlow's own default turned it on for this CPU
        assert report["warnings"] == []
    else:
        [message] = report["warnings"]
        assert "Import keras_robust first, or set TF_ENABLE_ONEDNN_OPTS=1" in message
