import pytest

from keras_robust.common import machine


@pytest.mark.parametrize("flags, simd", [
    (["amx_bf16", "avx512_bf16", "avx512f"], "AMX"),
    (["avx2", "avx512_bf16", "avx512f"], "AVX-512 BF16"),
    (["avx2", "avx512f"], "AVX-512"),
    (["avx", "avx2", "fma"], "AVX2"),
    ([], "no AVX2"),
])
def test_cpu_summary_names_the_widest_simd(monkeypatch, flags, simd):
    monkeypatch.setattr(machine, "cpu_description", lambda: {"model": "Some CPU", "cores": 2, "flags": flags})
    assert machine.cpu_summary() == f"Some CPU, 2 cores, {simd}"


def test_this_machine_is_described():
    cpu = machine.cpu_description()
    assert cpu["cores"] >= 1 and cpu["model"] and machine.cpu_summary().startswith(cpu["model"])
