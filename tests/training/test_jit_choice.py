import json

import pytest

import keras_robust
from keras_robust.training.jit_choice import CACHE_FILE, choose_jit_compile


def _builder(counter):
    def build():
        counter.append(1)
        return keras_robust.RobustModel(keras_robust.resnet(8), robust=False)
    return build


@pytest.mark.slow
def test_probe_times_both_and_caches_the_answer(tmp_path):
    builds, lines = [], []
    choice = choose_jit_compile(_builder(builds), 8, (32, 32, 3), 10, cache=tmp_path, log=lines.append)
    assert isinstance(choice, bool)
    # One model for the signature, one per timed variant.
    assert len(builds) == 3
    assert "with XLA" in lines[-1]
    record = next(iter(json.loads((tmp_path / CACHE_FILE).read_text()).values()))
    assert record["xla"] == (record["step_s_xla"] < record["step_s_no_xla"])
    again = choose_jit_compile(_builder(builds), 8, (32, 32, 3), 10, cache=tmp_path, log=lines.append)
    assert again == choice and len(builds) == 4


@pytest.mark.slow
def test_another_configuration_or_a_broken_cache_is_probed_anew(tmp_path):
    builds = []
    choose_jit_compile(_builder(builds), 8, (32, 32, 3), 10, cache=tmp_path, log=lambda _: None)
    choose_jit_compile(_builder(builds), 4, (32, 32, 3), 10, cache=tmp_path, log=lambda _: None)
    assert len(builds) == 6
    assert len(json.loads((tmp_path / CACHE_FILE).read_text())) == 2
    (tmp_path / CACHE_FILE).write_text("{not json")
    choose_jit_compile(_builder(builds), 8, (32, 32, 3), 10, cache=tmp_path, log=lambda _: None)
    assert len(builds) == 9
