"""The benchmark harness's bookkeeping: history, plot and the generated doc section."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import types

import pytest

from tests.helpers import REPO_ROOT


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", REPO_ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(run_all, value, commit):
    return {"time": "2026-11-26T10:00:00+00:00", "quick": True, "commit": commit,
            "cpu": {"model": "Test CPU", "cores": 2, "flags": ["avx2"]}, "python": "3.11",
            "tensorflow": "2.21.0", "keras": "3.15.1", "onnxruntime": "1.32.0",
            "figures": {"train resnet20 standard fp32 xla-off": {
                "images_per_s": run_all._figure(value, value - 5, "img/s", best=value + 5)},
                "explain resnet20 fp32": {"latency_s": run_all._figure(0.7, 0.8, "s", best=0.6)}}}


def test_history_appends_one_line_per_run_and_plots_them(run_all, tmp_path):
    history = tmp_path / "history.jsonl"
    for value, commit in ((400.0, "aaa"), (300.0, "bbb")):
        run_all.append_history(_record(run_all, value, commit), str(history))
    records = run_all.read_history(str(history))
    assert [r["commit"] for r in records] == ["aaa", "bbb"]
    assert len(history.read_text().splitlines()) == 2
    run_all.draw_history(records, str(tmp_path / "history.png"))
    assert (tmp_path / "history.png").read_bytes()[:4] == b"\x89PNG"


def test_generated_section_is_replaced_and_the_rest_kept(run_all, tmp_path):
    page = tmp_path / "performance.md"
    page.write_text("# Performance\n\nWritten by hand.\n")
    run_all.update_performance_doc(_record(run_all, 400.0, "aaa"), str(page))
    run_all.update_performance_doc(_record(run_all, 321.0, "bbb"), str(page))
    text = page.read_text()
    assert text.startswith("# Performance\n\nWritten by hand.\n")
    assert text.count("<!-- run_all:begin -->") == 1 and "commit bbb" in text and "commit aaa" not in text
    assert "images_per_s 321 img/s (best 326)" in text


def test_serving_tables_replace_their_section_only_when_measured(run_all, tmp_path):
    page = tmp_path / "serving.md"
    page.write_text("# Serving\n\nBy hand.\n")
    record = _record(run_all, 400.0, "ccc")
    run_all.update_serving_doc(record, str(page))
    assert page.read_text() == "# Serving\n\nBy hand.\n"  # no serve run: untouched
    record["tables"] = {run_all.SERVE_RUN: "| protocol | gain |\n|---|---|\n| grpc | 1.20× |\n"}
    run_all.update_serving_doc(record, str(page))
    text = page.read_text()
    assert text.startswith("# Serving\n\nBy hand.\n") and "| grpc | 1.20× |" in text and "commit ccc" in text


def test_serving_markdown_computes_the_batching_gain():
    spec = importlib.util.spec_from_file_location("serving_load", REPO_ROOT / "benchmarks" / "serving_load.py")
    serving_load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serving_load)

    def load(rate):
        return {"requests_per_s": rate, "p50_ms": 10.0, "p95_ms": 20.0}

    protocols = serving_load.PREDICT_PROTOCOLS
    figures = {"machine": "CPU", "data": "JPEG", "backend": "onnx", "clients": 8,
               "unbatched": {f"predict {p}": load(100.0) for p in protocols},
               "batched": {**{f"predict {p}": load(150.0) for p in protocols},
                           **{f"explain {p}": load(5.0) for p in serving_load.EXPLAIN_PROTOCOLS}},
               "one client": {f"predict {p}": load(50.0) for p in protocols}}
    table = serving_load.markdown(figures)
    assert "| grpc | 100.0 | 10.0 / 20.0 | 150.0 | 10.0 / 20.0 | 1.50× | 10.0 |" in table
    assert "| v2-binary | 5.0 | 10.0 | 20.0 |" in table


def test_plan_quick_is_a_subset_and_every_part_exists(run_all):
    quick, full = run_all.plan(True), run_all.plan(False)
    assert {name for name, _ in quick} <= {name for name, _ in full}
    assert all(arguments[0] in run_all.PARTS for _, arguments in full)
    assert json.dumps(full)


def test_explain_graph_table_goes_to_the_export_page_only_when_measured(run_all, tmp_path):
    page = tmp_path / "export.md"
    page.write_text("# Export\n")
    record = _record(run_all, 400.0, "ddd")
    run_all.update_export_doc(record, str(page))
    assert page.read_text() == "# Export\n"
    record["tables"] = {run_all.EXPLAIN_ONNX_RUN: "| model | ONNX Runtime |\n|---|---|\n| resnet44 | 1.00 s |\n"}
    run_all.update_export_doc(record, str(page))
    assert "| resnet44 | 1.00 s |" in page.read_text() and "commit ddd" in page.read_text()


def test_explain_onnx_table_states_each_ratio_from_its_figures():
    spec = importlib.util.spec_from_file_location("explain_onnx", REPO_ROOT / "benchmarks" / "explain_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = {"resnet44": {"onnx_s": 1.5, "tensorflow_s": 3.0, "onnx_peak_mb": 300, "tensorflow_peak_mb": 900,
                            "predict_mb": 2.6, "explain_mb": 2.7, "export_s": 6, "export_peak_mb": 1234.4,
                            "max_abs_diff_delta": 2e-7, "image_size": 32}}
    table = module.markdown(figures, "Test CPU, 2 cores")
    assert ("| resnet44 | 32×32 | 1.50 s | 3.00 s | 0.50 | 2.6 MB | 2.7 MB | 300 / 900 MB | 6 s, 1234 MB "
            "| 2.0e-07 |") in table
    figures["resnet50"] = dict(figures["resnet44"], onnx_s=40.0, tensorflow_s=32.0, onnx_peak_mb=900,
                               explain_mb=90.1, predict_mb=89.9, export_peak_mb=2447.2, image_size=224)
    assert module.markdown(figures, "Test CPU, 2 cores").endswith(
        "ONNX Runtime took 0.50–1.25 of TensorFlow's time per explanation and 0.33–1.00 of its peak memory; each "
        "explain graph is its predict graph plus 0.1–0.2 MB; exporting every ONNX graph peaked at 2447 MB at most "
        "(resnet50).")


def test_attribution_latency_table_states_each_ratio_from_its_figures():
    module = _benchmark_module("attribution_latency")
    onnx_s = {"predict": 0.01, "saliency": 0.0031, "smoothgrad": 0.9, "integrated_gradients": 1.95, "grad_cam": 0.025}
    tensorflow_s = {"predict": 0.02, "saliency": 0.05, "smoothgrad": 1.8, "integrated_gradients": 3.9,
                    "grad_cam": 0.05}
    table = module.markdown({"resnet44": {"image_size": 32, "export_s": 9, "onnx_s": onnx_s,
                                          "tensorflow_s": tensorflow_s}}, "Test CPU, 2 cores")
    assert "SmoothGrad 32 samples, Integrated Gradients 64 steps" in table
    assert "| resnet44 | 32×32 | predict | 10 ms | 1.0 | 20 ms | 1.0 | 0.50 |" in table
    assert "| resnet44 | 32×32 | integrated_gradients | 1.95 s | 195.0 | 3.90 s | 195.0 | 0.50 |" in table
    assert "| resnet44 | 32×32 | grad_cam | 25 ms | 2.5 | 50 ms | 2.5 | 0.50 |" in table
    assert "| resnet44 | 32×32 | saliency | 3.1 ms | 0.3 | 50 ms | 2.5 | 0.06 |" in table
    assert table.endswith(
        "In ONNX Runtime, per image, against a prediction: saliency 0.3×, smoothgrad 90.0×, integrated_gradients "
        "195.0×, grad_cam 2.5×. ONNX Runtime's time over TensorFlow's: predict 0.50, saliency 0.06, smoothgrad 0.50, "
        "integrated_gradients 0.50, grad_cam 0.50.")


def test_attribution_table_has_its_own_section_of_the_export_page(run_all, tmp_path):
    page = tmp_path / "export.md"
    page.write_text("# Export\n\n<!-- run_all:begin -->\nold explain\n<!-- run_all:end -->\n\n"
                    "<!-- run_all:attributions:begin -->\nold attributions\n<!-- run_all:attributions:end -->\n")
    record = _record(run_all, 400.0, "eee")
    record["tables"] = {run_all.ATTRIBUTION_RUN: "| model | endpoint |\n|---|---|\n| resnet44 | saliency |\n"}
    run_all.update_export_doc(record, str(page))
    text = page.read_text()
    assert "old explain" in text and "old attributions" not in text
    assert text.index("| resnet44 | saliency |") > text.index("run_all:attributions:begin")


VERSUS = REPO_ROOT / "benchmarks" / "versus_reference.py"


@pytest.mark.multiprocess
@pytest.mark.parametrize("arguments, message", [
    (["--torch-python", "/nonexistent/python"], "versus_reference: cannot run the torch Python: No such file or "
                                                "directory. Received: --torch-python /nonexistent/python"),
    (["--torch-python", sys.executable], "versus_reference: the torch Python cannot import torch and the "
                                         "reference (ModuleNotFoundError: No module named 'torch')"),
    (["--reference", "/nonexistent"], "versus_reference: the reference folder lacks /nonexistent/ref_speed.py"),
])
def test_versus_reference_names_a_bad_set_up_in_one_line(tmp_path, arguments, message):
    reference = tmp_path / "anchors"
    (reference / "reference").mkdir(parents=True)
    for name in ("ref_speed.py", "ref_ara_speed.py", "reference/main.py"):
        (reference / name).write_text("")
    if "--reference" not in arguments:
        arguments = [*arguments, "--reference", str(reference)]
    run = subprocess.run([sys.executable, str(VERSUS), *arguments], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stderr.strip() == run.stderr.strip().splitlines()[0], run.stderr
    assert run.stderr.startswith(message), run.stderr


@pytest.mark.slow
@pytest.mark.multiprocess
def test_versus_reference_without_torch_measures_our_side_and_records_nothing(tmp_path):
    before = (REPO_ROOT / "docs" / "performance.md").read_text()
    run = subprocess.run([sys.executable, str(VERSUS), "--depths", "8", "--modes", "standard", "--precisions",
                          "fp32", "--budget-s", "1", "--ara-images", "0"], capture_output=True, text=True,
                         timeout=600, env={k: v for k, v in os.environ.items() if k != "KERAS_ROBUST_TORCH_PYTHON"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "no torch Python given (--torch-python): our side only, no ratios" in run.stdout
    assert re.search(r"\| ResNet-8 fp32 standard \| \d+\.\d\d \| not run \| \|", run.stdout), run.stdout
    assert (REPO_ROOT / "docs" / "performance.md").read_text() == before


def _benchmark_module(name):
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _readings(*values):
    """A stub returning `values` one per call, as `/proc/stat`, `getrusage` or a clock would."""
    remaining = iter(values)
    return lambda: next(remaining)


def test_quiet_counts_the_cpu_of_other_processes_not_the_commands_own(monkeypatch):
    # Stubbed readings, so the test holds on a busy machine: the machine was
    # busy 3 core-seconds over 2 s of wall time, 1 of them the command's own.
    quiet = _benchmark_module("quiet")
    monkeypatch.setattr(quiet, "_machine_busy_s", _readings(100.0, 103.0))
    monkeypatch.setattr(quiet, "_own_cpu_s", _readings(10.0, 11.0))
    monkeypatch.setattr(quiet, "time", types.SimpleNamespace(perf_counter=_readings(50.0, 52.0)))
    run, others = quiet.run_measured([sys.executable, "-c", "print(1)"])
    assert run.stdout == "1\n" and others == pytest.approx(1.0)
    # Our own time counted twice (or a clock going back) never reads as negative cores.
    monkeypatch.setattr(quiet, "_machine_busy_s", _readings(100.0, 100.5))
    monkeypatch.setattr(quiet, "_own_cpu_s", _readings(10.0, 11.0))
    monkeypatch.setattr(quiet, "time", types.SimpleNamespace(perf_counter=_readings(50.0, 52.0)))
    assert quiet.run_measured([sys.executable, "-c", "pass"])[1] == 0.0
    monkeypatch.setattr(quiet, "_machine_busy_s", lambda: None)
    monkeypatch.setattr(quiet, "_own_cpu_s", lambda: 10.0)
    monkeypatch.setattr(quiet, "time", types.SimpleNamespace(perf_counter=_readings(50.0, 52.0)))
    assert quiet.run_measured([sys.executable, "-c", "pass"])[1] is None


def test_quiet_reads_real_cpu_time_of_the_machine_and_of_the_command():
    quiet = _benchmark_module("quiet")
    before_machine, before_own = quiet._machine_busy_s(), quiet._own_cpu_s()
    spin = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", spin], check=True)
    # The waited-for child's CPU second is ours, and the machine was busy at least that long.
    assert quiet._own_cpu_s() - before_own >= 0.3
    assert quiet._machine_busy_s() - before_machine >= 0.29


def test_versus_reference_runs_a_busy_run_again_and_stops_when_the_machine_stays_busy(monkeypatch):
    versus = _benchmark_module("versus_reference")
    command = [sys.executable, "-c", "pass"]
    printed = subprocess.CompletedProcess(command, 0, stdout='{"images_per_s": 5.0}\n', stderr="")
    # Busy for the first run of ours, then quiet: that run is measured again.
    others = iter([0.9, 0.05, 0.1])
    monkeypatch.setattr(versus, "run_measured", lambda command, **_: (printed, next(others)))
    row = versus._pair("quiet", command, command, repeats=1)
    assert row["ours"] == row["reference"] == 5.0 and row["others_cores"] == 0.1
    assert versus._quiet_sentence([row]).startswith(" Other processes kept at most 0.10 cores")
    monkeypatch.setattr(versus, "run_measured", lambda command, **_: (printed, 1.95))
    with pytest.raises(RuntimeError, match=r"^the machine is not quiet: other processes kept "
                                           r"1\.95 cores busy while busy, ours ran, 3 times"):
        versus._pair("busy", command, command, repeats=1)


@pytest.mark.multiprocess
def test_busy_machine_needs_the_reference_and_says_so_in_one_line():
    run = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "busy_machine.py")], capture_output=True,
                         text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "KERAS_ROBUST_TORCH_PYTHON"})
    assert run.returncode == 2 and run.stderr.strip() == ("busy_machine: it compares two frameworks and needs the "
                                                          "reference's. Received: --torch-python (none)")


def test_onednn_breakdown_sums_each_kernel_class_per_step():
    breakdown = _benchmark_module("onednn_breakdown")
    log = "\n".join([
        "onednn_verbose,v1,info,oneDNN v3.7.3",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx2,forward_training,"
        "src:f32::blocked:acdb::f0 wei:f32::blocked:Acdb8a::f0 dst:f32::blocked:acdb::f0,,alg:direct,mb128,3.0",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx2,forward_training,"
        "src:f32::blocked:acdb::f0 wei:f32::blocked:Acdb8a::f0,,alg:direct,mb128,5.0",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,backward_weights,"
        "src:f32::blocked:aBcd8b::f0 diff_wei:f32::blocked:ABcd8b8a::f0,,alg:direct,mb128,4.0",
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:abcd::f0,,,128x16,1.0",
        "onednn_verbose,v1,primitive,create:cache_miss,cpu,reorder,jit:uni,undef,src:f32::blocked:abcd::f0,,,x,9.0",
        "{\"images_per_s\": 1}",
    ])
    classes = breakdown.kernel_classes(log, steps=2)
    assert classes == {
        "convolution forward_training": {"ms": 4.0, "kernels": ["brg_conv_fwd:avx2 (f32 acdb)"]},
        "convolution backward_weights": {"ms": 2.0, "kernels": ["jit:avx2 (f32 aBcd8b)"]},
        "reorder": {"ms": 0.5, "kernels": ["jit:uni"]},
    }
    table = breakdown.markdown("ResNet-20 fp32 standard", {"step_ms": 10.0, "classes": classes}, None)
    assert table.splitlines()[2] == "| **step** | **10** |  |"
    assert table.splitlines()[3] == "| convolution forward_training | 4.0 | brg_conv_fwd:avx2 (f32 acdb) |"


def assert_switch_table_is_the_recorded_run(figures_name, switch, first, second):
    """Each row `| ResNet-D | mode | first | second | first/second× |` of docs/performance.md is the JSON's."""
    rows = json.loads((REPO_ROOT / "docs" / "figures" / figures_name).read_text())
    figures = {(row["depth"], row["config"], row[switch]): row["images_per_s"] for row in rows}
    text = (REPO_ROOT / "docs" / "performance.md").read_text()
    for depth, mode, _ in figures:
        a, b = figures[depth, mode, first], figures[depth, mode, second]
        assert f"| ResNet-{depth} | {mode} | {a:.1f} | {b:.1f} | {a / b:.2f}× |" in text


def test_the_onednn_table_in_the_docs_is_the_recorded_run():
    assert_switch_table_is_the_recorded_run("onednn_switch.json", "onednn", "on", "off")


def test_the_fused_batch_norm_table_in_the_docs_is_the_recorded_run():
    assert_switch_table_is_the_recorded_run("fused_batch_norm.json", "batch_norm", "fused", "keras")


def test_the_bfloat16_fused_batch_norm_table_in_the_docs_is_the_recorded_run():
    assert_switch_table_is_the_recorded_run("fused_batch_norm_bf16.json", "batch_norm", "fused", "keras")


def test_the_docs_sentences_on_the_versus_run_hold_for_its_latest_record():
    text = " ".join((REPO_ROOT / "docs" / "performance.md").read_text().split())
    latest = json.loads((REPO_ROOT / "docs" / "benchmarks" / "versus_reference.jsonl").read_text().splitlines()[-1])
    rows = {row["name"]: row for row in latest["rows"]}
    training = sorted((row["ours"] / row["reference"], name) for name, row in rows.items() if name.startswith("ResNet"))
    assert {name.split()[1] for _, name in training} == {"fp32", "bf16"}
    assert ("every float32 configuration, ResNet-20 and -44, ran at least 1.1 times the reference's speed, and "
            "every bfloat16 one at least 1.0 times") in text
    assert min(ratio for ratio, name in training if " fp32 " in name) >= 1.1
    assert min(ratio for ratio, name in training if " bf16 " in name) >= 1.0
    for ratio, name in training[:2]:
        network, precision, mode = name.split()
        assert f"{network}'s {precision} {mode} step ({ratio:.2f}×)" in text
    robust = [ratio for ratio, name in training if name.endswith(" robust")]
    assert f"The robust steps ran {min(robust):.2f}–{max(robust):.2f}× the reference's speed" in text
    fp32 = [rows[f"ResNet-{depth} fp32 standard"] for depth in (20, 44)]
    assert "ours ran {:.2f}× and {:.2f}× its float32 speed".format(*(r["ours"] / r["reference"] for r in fp32)) in text
    gains = [rows[f"ResNet-{depth} bf16 standard"][side] / rows[f"ResNet-{depth} fp32 standard"][side]
             for side in ("ours", "reference") for depth in (20, 44)]
    assert ("bfloat16 sped our standard step up {:.2f}× over float32 for ResNet-20 and {:.2f}× for ResNet-44; "
            "`torch.autocast` sped the reference up {:.2f}× and {:.2f}×").format(*gains) in text
    ara = rows["ARA ResNet-20 half-Huber, 32 images"]
    assert f"ARA ran at {ara['ours'] / ara['reference']:.2f}× the reference" in text
    assert f"The reference attacked {ara['reference']:.2f} img/s here" in text


def test_the_busy_machine_section_is_its_recorded_run():
    busy, quiet, versus = (_benchmark_module(name) for name in ("busy_machine", "quiet", "versus_reference"))
    record = json.loads((REPO_ROOT / "docs" / "figures" / "ara_busy_machine.json").read_text())
    page = (REPO_ROOT / "docs" / "performance.md").read_text()
    assert busy.markdown(record) in page
    text = " ".join(page.split())
    images_per_s = {(row["neighbour"], row["side"]): row["images_per_s"] for row in record["rows"]}
    slowdowns = [images_per_s["none", side] / images_per_s["one busy loop", side] for side in ("reference", "ours")]
    assert "Beside the busy loop the reference's ARA slowed {:.2f}× and ours {:.2f}×".format(*slowdowns) in text
    assert (f"A run above {quiet.QUIET_LIMIT_CORES} cores is run again; a machine still busy after "
            f"{versus.ATTEMPTS} tries stops the benchmark") in text


def test_the_closed_form_batch_norm_tables_are_the_recorded_runs():
    text = (REPO_ROOT / "docs" / "performance.md").read_text()
    rows = json.loads((REPO_ROOT / "docs" / "figures" / "twice_differentiable_batch_norm.json").read_text())
    figures = {(row["depth"], row["precision"], row["batch_norm"]): row for row in rows}
    for depth, precision, _ in figures:
        ours, keras = figures[depth, precision, "fused"], figures[depth, precision, "keras"]
        assert (f"| ResNet-{depth} | {precision} | robust | {ours['images_per_s']:.1f} | {keras['images_per_s']:.1f} | "
                f"{ours['images_per_s'] / keras['images_per_s']:.2f}× | {ours['peak_rss_gib']:.2f} against "
                f"{keras['peak_rss_gib']:.2f} |") in text
    record = json.loads((REPO_ROOT / "docs" / "figures" / "batch_norm_second_derivative.json").read_text())
    for row in record["rows"]:
        ours, keras = row["keras_robust_relative_distance"], row["keras_relative_distance"]
        assert f"| ResNet-{row['depth']} | {row['batch_size']} | {ours:.1e} | {keras:.1e} |" in text
        assert row["batch_size"] != 8 or keras > 10_000 * ours
    assert "more than 10,000 times ours at batch 8" in " ".join(text.split())


def test_the_regulariser_gradient_through_our_batch_norm_is_the_textbook_one():
    """A small network, where float32 rounding stays far below the terms Keras' layer drops."""
    row = _benchmark_module("batch_norm_second_derivative").measure(depth=8, batch_size=4)
    assert row["keras_robust_relative_distance"] < 1e-5
    assert row["keras_relative_distance"] > 100 * row["keras_robust_relative_distance"]


ROBUST_BACKBONES_TINY = ["--networks", "resnet8", "--epochs", "1", "--limit-train", "64", "--limit-test", "32",
                         "--ara-images", "4", "--ara-steps", "40"]


def test_robust_backbones_names_missing_data_in_one_line(tmp_path):
    module = _benchmark_module("robust_backbones")
    with pytest.raises(SystemExit, match=r"^robust_backbones: no data at /nonexistent/cifar.tar.gz; give --data"):
        module.main(["--data", "/nonexistent/cifar.tar.gz", "--json", str(tmp_path / "figures.json")])
    assert not (tmp_path / "figures.json").exists()


@pytest.mark.slow
def test_robust_backbones_records_three_runs_once_and_tables_them(cifar10_archive, tmp_path, capsys):
    """One epoch of each run of a ResNet-8 (a keras.applications network takes over a minute a run), then a rerun."""
    module = _benchmark_module("robust_backbones")
    figures = tmp_path / "figures.json"
    command = ["--data", str(cifar10_archive), *ROBUST_BACKBONES_TINY, "--out", str(tmp_path / "runs"),
               "--json", str(figures)]
    module.main(command)
    results = json.loads(figures.read_text())
    runs = results["runs"]
    assert sorted(runs) == ["resnet8 finetune", "resnet8 robust", "resnet8 standard"]
    for name, record in runs.items():
        assert record["epochs_done"] == record["epochs"] == 1
        assert not record["non_finite"] and record["failure"] is None
        numbers = [record[key] for key in ("train_ce", "clean_accuracy", "attack_ara", "btr_ara", "wall_seconds")]
        assert all(math.isfinite(value) for value in numbers), (name, numbers)
        assert record["test_images"] == 32 and record["ara_images"] == 4 and record["machine"]
        assert (tmp_path / "runs" / "resnet8" / record["run"] / "log.csv").exists()
    assert runs["resnet8 standard"]["train_l_adv"] is None and runs["resnet8 standard"]["train_psi"] is None
    assert math.isfinite(runs["resnet8 robust"]["train_psi"])
    assert math.isfinite(runs["resnet8 finetune"]["train_l_adv"])
    capsys.readouterr()
    module.main(command)  # nothing left to do: no run is trained or measured again
    assert json.loads(figures.read_text()) == results
    printed = capsys.readouterr().out
    assert all(f"resnet8 {run}: complete, in {figures}" in printed for run in module.RUNS)
    table = module.report_markdown(results)
    standard = runs["resnet8 standard"]

    def times(mode, record):
        value, base = record[f"{mode}_ara"], standard[f"{mode}_ara"]
        return f"{value / base:.2f}×" if base else "∞" if value else "n/a"

    for run in module.RUNS:
        record = runs[f"resnet8 {run}"]
        relative = "— | —" if run == "standard" else (
            f"{times('attack', record)} / {times('btr', record)} | "
            f"{100 * (record['clean_accuracy'] - standard['clean_accuracy']):+.1f} points")
        row = (f"| resnet8 | {run} | 1 of 1 | {100 * record['clean_accuracy']:.2f} % | {record['attack_ara']:.5f} | "
               f"{record['btr_ara']:.5f} | {relative} |")
        assert row in table.splitlines(), (row, table)
    assert table.count("resnet8: ") == 1 and "no non-finite value in any recorded run" in table


def test_the_backbone_stability_table_in_the_method_page_is_the_recorded_run():
    module = _benchmark_module("backbone_stability")
    record = json.loads((REPO_ROOT / "docs" / "figures" / "backbone_stability.json").read_text())
    text = (REPO_ROOT / "docs" / "method.md").read_text()
    section = text.split("<!-- backbone_stability:begin -->\n", 1)[1].split("\n<!-- backbone_stability:end -->")[0]
    assert section == module.stability_markdown(record)
    assert len(record["runs"]) >= 2  # the bounded runs at both learning rates, at least


def test_the_server_fairness_table_in_the_reliability_page_is_the_recorded_run():
    module = _benchmark_module("server_fairness")
    record = json.loads((REPO_ROOT / "docs" / "figures" / "server_fairness.json").read_text())
    text = (REPO_ROOT / "docs" / "reliability.md").read_text()
    section = text.split(module.BEGIN)[1].split(module.END)[0].strip()
    assert section == module.report_markdown(record)
    assert [row["attack"] for row in record["rows"]] == list(module.SCENARIOS)


def test_the_server_fairness_memory_sentence_says_whether_a_repeat_grew_the_server():
    module = _benchmark_module("server_fairness")

    def rows(**growth):
        return [{"attack": name.replace("_", " "), "rss_before_mb": 100.0, "rss_after_mb": 100.0 + grown}
                for name, grown in growth.items()]

    assert module.memory_sentence(rows(a=10, b=-5)) == "3 s after every attack the server was within 50 MB of its size before it."
    first, again = "32 concurrent 30.5 MiB gRPC requests", "the same gRPC burst again"
    settled = module.memory_sentence([*rows(a=10), {"attack": first, "rss_before_mb": 0, "rss_after_mb": 90},
                                      {"attack": again, "rss_before_mb": 90, "rss_after_mb": 120}])
    assert settled == (f"3 s after some attacks the server was larger than before them ({first} +90 MB); "
                       f"repeating them did not grow it further ({again} +30 MB).")
    grew = module.memory_sentence([{"attack": first, "rss_before_mb": 0, "rss_after_mb": 90},
                                   {"attack": again, "rss_before_mb": 90, "rss_after_mb": 180}])
    assert grew.endswith(f"repeating them grew it again ({again} +90 MB).")


def test_the_readme_says_which_backbones_train_at_which_rate_as_the_stability_run_found():
    module = _benchmark_module("backbone_stability")
    runs = json.loads((REPO_ROOT / "docs" / "figures" / "backbone_stability.json").read_text())["runs"]
    readme = (REPO_ROOT / "README.md").read_text()
    backbones = [run for run in runs.values() if run["variant"] == "default" and run["network"] not in module.RESNETS]

    def names(lr, test):
        return sorted(run["network"] for run in backbones if run["learning_rate"] == lr and test(run))

    assert len(names(0.01, lambda run: True)) == 14 and names(0.01, lambda run: run["failure"]) == []
    assert names(0.1, lambda run: run["failure"]) == ["ConvNeXtTiny"]
    assert names(0.1, lambda run: not run["failure"] and run["ce_last"] > module.BROKEN_CE) == ["InceptionV3"]
    sentence = " ".join(readme.split("all fourteen train finitely at lr 0.01; at lr 0.1 all but ")[1].split()[:1])
    assert sentence == "ConvNeXtTiny," and "and InceptionV3 ends far above chance there" in " ".join(readme.split())


def test_robust_backbones_counts_late_images_instead_of_stopping(monkeypatch, tmp_path):
    module = _benchmark_module("robust_backbones")
    from keras_robust.evaluation import accuracy_robustness

    asked = []

    def ara(classifier, images, labels, steps, progress, checkpoint, sanity_check):
        asked.append((steps, os.path.basename(checkpoint), sanity_check))
        return types.SimpleNamespace(attack_ara=0.1, btr_ara=0.2, clean_accuracy=0.9, attack_late_images=1,
                                     btr_late_images=0, attack_unbroken_images=0, btr_unbroken_images=3)

    monkeypatch.setattr(accuracy_robustness, "ara", ara)
    import keras

    model = types.SimpleNamespace(classifier=keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]),
                                  evaluate=lambda *_, **__: {"accuracy": 0.5})
    test = types.SimpleNamespace(dataset=None, num_examples=10)
    args = types.SimpleNamespace(ara_steps=450)
    scores = module.evaluate(model, types.SimpleNamespace(path=str(tmp_path)), test, [0], [0], args)
    assert scores["batch_norm_layers_recalibrated"] == 0  # no batch normalization, nothing to recalibrate
    assert asked == [(450, "ara.npz", False)]
    assert (scores["attack_late_images"], scores["btr_late_images"], scores["btr_unbroken_images"]) == (1, 0, 3)
    record = {"network": "N", "run": "standard", "epochs": 1, "epochs_done": 1, "settings": {"ara_steps": 450},
              "data": "JPEG", "machine": "m", "test_images": 10, **scores}
    table = module.report_markdown({"runs": {"N standard": record}})
    assert "| 0.10000 (1 late) | 0.20000 (3 unbroken) |" in table and "loose upper bound" in table


def test_autoattack_reference_table_judges_each_network_by_the_issues_goal():
    module = _benchmark_module("autoattack_reference")
    run = {"network": "all", "paper_name": "N3", "norm": "L2", "eps": 0.5, "images": 100,
           "robust_accuracy_ours": 0.52, "robust_accuracy_reference": 0.515, "verdicts_agree": 0.98,
           "seconds_per_image_ours": 4.0, "seconds_per_image_reference": 5.0}
    table = module.report_markdown({"machine": "m", "runs": {"a": run, "b": {**run, "paper_name": "N1",
                                                                           "verdicts_agree": 0.9}}})
    assert "| N3 (all) | L2 0.5 | 100 | 52.0 % | 51.5 % | 98.0 % | 4.00 / 5.00 |" in table
    assert "N3: +0.5 points, 98.0 % of verdicts equal: within the goal (1 point, 97 %)." in table
    assert "N1: +0.5 points, 90.0 % of verdicts equal: outside the goal" in table
    assert "Not measured yet: N1, N2, N4." in table  # runs a and b both name the network "all"
    resumed = {**run, "seconds_per_image_ours": None, "seconds_per_image_reference": None}
    assert "| 98.0 % | not timed (resumed) |" in module.report_markdown({"machine": "m", "runs": {"a": resumed}})


def test_the_autoattack_reference_table_in_the_results_page_is_the_recorded_run():
    module = _benchmark_module("autoattack_reference")
    record = json.loads((REPO_ROOT / "docs" / "figures" / "autoattack_reference.json").read_text())
    text = (REPO_ROOT / "docs" / "results.md").read_text()
    assert text.split(module.BEGIN)[1].split(module.END)[0].strip() == module.report_markdown(record)
    compile((REPO_ROOT / "benchmarks" / "autoattack_reference_torch.py").read_text(), "torch side", "exec")
