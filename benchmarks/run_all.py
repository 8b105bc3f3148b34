"""Every speed figure keras-robust claims, measured on this machine, with a history.

    python benchmarks/run_all.py --quick   # about 5 minutes on 2 cores
    python benchmarks/run_all.py           # everything, ResNet-20 and -44 (about an hour here)

Prints training images/s per mode and precision (with and without XLA), the
cost of an attack step against a standard training step, explanation
latency, ARA images/s, ONNX Runtime vs TensorFlow predict/explain latency and
server latency, each as the median and minimum over repeats, with the CPU
model and flags, core count and library versions. Appends the record to
`docs/benchmarks/history.jsonl`, draws `docs/benchmarks/history.png` and
rewrites the generated section of `docs/performance.md`. Every measurement
runs in a fresh process, so one's memory and compiled graphs do not slow the
next.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from keras_robust.common import onednn as _onednn  # noqa: F401  (before TensorFlow: its oneDNN kernels on, as users get them)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
HISTORY = os.path.join(REPO, "docs", "benchmarks", "history.jsonl")
PLOT = os.path.join(REPO, "docs", "benchmarks", "history.png")
PERFORMANCE = os.path.join(REPO, "docs", "performance.md")
SERVING = os.path.join(REPO, "docs", "serving.md")
SERVE_RUN = "serve resnet20"
EXPLAIN_ONNX_RUN = "explain-onnx"
ATTRIBUTION_RUN = "attribution-latency"
EXPORT = os.path.join(REPO, "docs", "export.md")
DATA = os.path.join(REPO, "..", "shared", "data", "cifar10-jpeg.tar.gz")
MODES = ("standard", "robust", "adversarial", "robust+adversarial")


def plan(quick):
    """The measurements of a run: `(name, part arguments)`."""
    depths = (20,) if quick else (20, 44)
    modes = ("standard", "robust") if quick else MODES
    precisions = ("fp32", "bf16")
    jits = ("off",) if quick else ("off", "on")
    budget = "6" if quick else "20"
    runs = [(f"train resnet{d} {m} {p} xla-{j}", ["train", str(d), m, p, j, budget])
            for d in depths for p in precisions for m in modes for j in jits]
    runs += [(f"attack-step resnet{d} {p}", ["attack", str(d), p, budget]) for d in depths for p in precisions]
    runs += [(f"explain resnet{d} {p}", ["explain", str(d), p]) for d in (20, 44) for p in precisions]
    runs += [("ara-attack resnet20 fp32", ["ara", "20", "fp32", "30" if quick else "450"])]
    runs += [("ara resnet44-cifar10-standard fp32", ["ara_pretrained", "resnet44-cifar10-standard",
                                                     "20" if quick else "100", "30" if quick else "450"])]
    runs += [("export resnet20", ["export", "5" if quick else "20"])]
    runs += [(EXPLAIN_ONNX_RUN, ["explain_onnx", "1" if quick else "3",
                               "resnet44,mobilenetv2" if quick else "resnet44,resnet50,mobilenetv2,efficientnetb0"])]
    runs += [(ATTRIBUTION_RUN, ["attribution_latency", "1" if quick else "3",
                              "resnet44" if quick else "resnet44,resnet50,mobilenetv2,efficientnetb0"])]
    runs += [(SERVE_RUN, ["serve", "80" if quick else "400"])]
    runs += [("startup", ["startup", "3" if quick else "5"])]
    return runs


def part_train(depth, mode, precision, jit, budget):
    sys.path.insert(0, HERE)
    import train_speed

    result = train_speed.measure_one(int(depth), mode, jit == "on", 3, 128, precision, float(budget))
    return {"images_per_s": _figure(128 / result["step_s"], 128 / result["slowest_step_s"],
                                    "img/s", best=128 / result["fastest_step_s"]),
            "peak_rss_gib": round(result["peak_rss_gib"], 2)}


def part_attack(depth, precision, budget):
    """An attack step (forward + input gradient, inference mode) and a standard training step."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_robust
    from keras_robust.training.precision import precision_scope

    with precision_scope(precision):
        classifier = keras_robust.resnet(int(depth), activation="relu")
        model = keras_robust.RobustModel(classifier, robust=False, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=False)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((128, 32, 32, 3), dtype="float32"))
    labels = tf.constant(rng.integers(0, 10, 128).astype("int32"))

    @tf.function
    def attack_step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = classifier(x, training=False)
            loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        return tape.gradient(loss, x)

    attack = _times(lambda: attack_step(images).numpy(), float(budget))
    train = _times(lambda: model.train_on_batch(images, labels), float(budget))
    return {"attack_step_ms": _figure(1000 * statistics.median(attack), 1000 * max(attack), "ms",
                                      best=1000 * min(attack)),
            "train_step_ms": _figure(1000 * statistics.median(train), 1000 * max(train), "ms",
                                     best=1000 * min(train)),
            "attack_over_train": round(statistics.median(attack) / statistics.median(train), 3)}


def part_explain(depth, precision):
    """1 image toward 12 targets (predicted, runner-up, all 10), 35 steps."""
    import numpy as np

    import keras_robust
    from keras_robust.explanations.adversarial import AdversarialExplainer
    from keras_robust.training.precision import precision_scope

    with precision_scope(precision):
        classifier = keras_robust.resnet(int(depth))
    explainer = AdversarialExplainer(classifier, sanity_check=False)
    image = np.random.default_rng(0).random((1, 32, 32, 3), dtype="float32")
    explainer.explain_standard(image)
    times = _times(lambda: explainer.explain_standard(image), 0.0, repeats=5)
    return {"latency_s": _figure(statistics.median(times), max(times), "s", best=min(times))}


def part_ara(depth, precision, steps):
    """Both ARA attacks (momentum 0.9, rho 20) on 100 random images, every image attacked:
    the raw rate, scaled to 450 steps when fewer are run."""
    import numpy as np

    import keras_robust
    from keras_robust.method.attacks import attack_details
    from keras_robust.training.precision import precision_scope

    with precision_scope(precision):
        classifier = keras_robust.resnet(int(depth))
    rng = np.random.default_rng(0)
    images = rng.random((100, 32, 32, 3), dtype="float32")
    labels = rng.integers(0, 10, 100)
    attack_details(classifier, images[:2], labels[:2], rho=20.0, steps=int(steps), mode="l2min",
                   momentum=0.9, sanity_check=False)
    start = time.perf_counter()
    for mode in ("l2min", "btr"):
        attack_details(classifier, images, labels, rho=20.0, steps=int(steps), mode=mode,
                       momentum=0.9, sanity_check=False).rmse.numpy()
    seconds = (time.perf_counter() - start) * 450 / int(steps)
    return {"images_per_s": _figure(100 / seconds, 100 / seconds, "img/s"), "measured_steps": int(steps)}


def part_ara_pretrained(name, count, steps):
    """`keras_robust.evaluation.accuracy_robustness.ara` itself on a shipped network and JPEG CIFAR-10 test images."""
    import keras_robust
    from keras_robust.data import load_dataset
    from keras_robust.evaluation.accuracy_robustness import ara, evaluation_indices

    data = load_dataset(DATA, "test", batch_size=1000)
    images, labels = data.arrays()
    chosen = evaluation_indices(len(images), int(count))
    model = keras_robust.pretrained(name)
    start = time.perf_counter()
    result = ara(model, images[chosen], labels[chosen], steps=int(steps), progress=False)
    seconds = (time.perf_counter() - start) * 450 / int(steps)
    return {"images_per_s": _figure(int(count) / seconds, int(count) / seconds, "img/s"),
            "measured_steps": int(steps), "images": int(count),
            "clean_accuracy": result.clean_accuracy}


def part_export(repeats):
    """ONNX Runtime vs TensorFlow for a ResNet-20 export (batch 1 and 32 predict, explain)."""
    import keras_robust

    with tempfile.TemporaryDirectory() as folder:
        model_path = os.path.join(folder, "resnet20", "model.keras")
        os.makedirs(os.path.dirname(model_path))
        keras_robust.resnet(20).save(model_path)
        out = os.path.join(folder, "figures.json")
        _run_script("export_latency.py", "--models", model_path, "--data", DATA, "--repeats", repeats,
                    "--explain-repeats", str(max(2, int(repeats) // 4)), "--out", out)
        with open(out, encoding="utf-8") as file:
            figures = json.load(file)["models"]["resnet20"]
    return {f"{key} {engine}": _figure(ms, ms, "ms")
            for key, value in figures.items() if key.endswith("_ms") for engine, ms in value.items()}


def part_explain_onnx(repeats, models):
    """The ONNX explain graph against the TensorFlow explainer: latency, sizes and peak memory
    (benchmarks/explain_onnx.py); its table rides along as `markdown`."""
    measured = _models_script("explain_onnx.py", repeats, models)
    result = {"markdown": measured["markdown"]}
    for name, figures in measured["figures"].items():
        for engine in ("onnx", "tensorflow"):
            seconds = figures[f"{engine}_s"]
            result[f"{name} {engine}"] = _figure(seconds, seconds, "s")
            result[f"{name} {engine} peak_mb"] = round(figures[f"{engine}_peak_mb"])
        result[f"{name} explain_mb"] = round(figures["explain_mb"], 2)
        result[f"{name} predict_mb"] = round(figures["predict_mb"], 2)
        result[f"{name} export peak_mb"] = round(figures["export_peak_mb"])
    return result


def part_attribution_latency(repeats, models):
    """Each attribution method's latency against predict, ONNX Runtime vs TensorFlow
    (benchmarks/attribution_latency.py); its table rides along as `markdown`."""
    measured = _models_script("attribution_latency.py", repeats, models)
    result = {"markdown": measured["markdown"]}
    for name, figures in measured["figures"].items():
        for engine in ("onnx", "tensorflow"):
            for endpoint, seconds in figures[f"{engine}_s"].items():
                result[f"{name} {endpoint} {engine}"] = _figure(1000 * seconds, 1000 * seconds, "ms")
    return result


def _models_script(script, repeats, models):
    """The JSON a `--repeats R --models a b ...` benchmark prints last."""
    output = subprocess.run([sys.executable, os.path.join(HERE, script), "--repeats", repeats,
                             "--models", *models.split(",")], check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def part_serve(requests):
    """Predict (batching off and on, per protocol) and explain requests/s and latency at 8
    concurrent clients (ONNX backend); the tables of docs/serving.md ride along as `markdown`."""
    import keras_robust

    with tempfile.TemporaryDirectory() as folder:
        model_path = os.path.join(folder, "model.keras")
        keras_robust.resnet(20).save(model_path)
        out, tables = os.path.join(folder, "figures.json"), os.path.join(folder, "tables.md")
        _run_script("serving_load.py", "--model", model_path, "--data", DATA, "--predict-requests", requests,
                    "--explain-requests", str(max(8, int(requests) // 10)), "--out", out, "--markdown", tables)
        with open(out, encoding="utf-8") as file:
            figures = json.load(file)
        with open(tables, encoding="utf-8") as file:
            result = {"markdown": file.read()}
    for setting in ("unbatched", "batched", "one client"):
        for kind, load in figures[setting].items():
            name = f"{kind} {setting}"
            if setting != "one client":
                result[f"{name} requests_per_s"] = _figure(load["requests_per_s"], load["requests_per_s"], "req/s")
                result[f"{name} p95"] = _figure(load["p95_ms"], load["p95_ms"], "ms")
            result[f"{name} p50"] = _figure(load["p50_ms"], load["p50_ms"], "ms")
    return result


def part_startup(repeats):
    """`keras-robust --help` time, and the ONNX server's start-up time and memory."""
    output = subprocess.run([sys.executable, os.path.join(HERE, "startup.py"), "--repeats", str(repeats)],
                            check=True, capture_output=True, text=True)
    figures = json.loads(output.stdout.strip().splitlines()[-1])
    return {
        "help": _figure(figures["help_s"], figures["help_s"], "s"),
        "serve ready": _figure(figures["serve_ready_s"], figures["serve_ready_s"], "s"),
        "serve rss_mb": figures["serve_rss_mb"],
        "serve loads tensorflow": int(figures["serve_loads_tensorflow"]),
    }


PARTS = {"train": part_train, "attack": part_attack, "explain": part_explain, "ara": part_ara,
         "ara_pretrained": part_ara_pretrained,
         "export": part_export, "explain_onnx": part_explain_onnx,
         "attribution_latency": part_attribution_latency, "serve": part_serve, "startup": part_startup}


def _figure(median, worst, unit, best=None):
    """One figure: median and the best over repeats ("min" is the fastest time)."""
    best = median if best is None else best
    return {"median": round(median, 4), "best": round(best, 4), "worst": round(worst, 4), "unit": unit}


def _times(call, budget, repeats=3):
    """Durations of `call` after two warm-up calls: at least `repeats`, and `budget` seconds."""
    for _ in range(2):
        call()
    times, begin = [], time.perf_counter()
    while len(times) < repeats or time.perf_counter() - begin < budget:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _run_script(name, *args):
    subprocess.run([sys.executable, os.path.join(HERE, name), *map(str, args)], check=True,
                   stdout=subprocess.DEVNULL)


def machine_record():
    import keras
    import onnxruntime
    import tensorflow as tf

    from keras_robust.common.machine import cpu_description

    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"cpu": cpu_description(), "python": sys.version.split()[0], "tensorflow": tf.__version__,
            "keras": keras.__version__, "onnxruntime": onnxruntime.__version__, "commit": commit or None}


def run(quick, only=None):
    record = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "quick": quick, "only": only, **machine_record(), "figures": {}}
    print(f"{record['cpu']['model']}, {record['cpu']['cores']} cores, "
          f"{'AVX-512 BF16' if 'avx512_bf16' in record['cpu']['flags'] else 'no AVX-512 BF16'}; "
          f"TensorFlow {record['tensorflow']}, Keras {record['keras']}, onnxruntime {record['onnxruntime']}",
          flush=True)
    for name, arguments in plan(quick):
        if only and not any(word in name for word in only):
            continue
        output = subprocess.run([sys.executable, __file__, "--part", *arguments], capture_output=True,
                                text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if output.returncode:
            print(f"{name}: FAILED\n{output.stderr[-2000:]}", flush=True)
            record["figures"][name] = {"failed": output.stderr.strip().splitlines()[-1:]}
            continue
        figures = json.loads(output.stdout.strip().splitlines()[-1])
        if "markdown" in figures:  # a doc's tables, not figures for the history
            record.setdefault("tables", {})[name] = figures.pop("markdown")
        record["figures"][name] = figures
        print(f"{name:<40} {describe(figures)}", flush=True)
    return record


def describe(figures):
    parts = []
    for key, value in figures.items():
        if isinstance(value, dict):
            best = f" (best {value['best']:g})" if value["best"] != value["median"] else ""
            parts.append(f"{key} {value['median']:g} {value['unit']}{best}")
        else:
            parts.append(f"{key} {value:g}")
    return "; ".join(parts)


def append_history(record, path=HISTORY):
    """Adds `record` as one line; the file is replaced whole, so a kill keeps the old one."""
    sys.path.insert(0, REPO)
    from keras_robust.common.atomic import write_atomically

    os.makedirs(os.path.dirname(path), exist_ok=True)
    previous = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    write_atomically(path, previous + json.dumps(record, sort_keys=True) + "\n")


def read_history(path=HISTORY):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def draw_history(records, path=PLOT):
    """Each figure's median relative to its first run on this CPU model, one line per figure:
    a regression is a line falling below 1 (throughput) or rising above it (latency)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cpu = records[-1]["cpu"]["model"]
    records = [r for r in records if r["cpu"]["model"] == cpu]
    panels = {("img/s", "req/s"): "throughput relative to the first run (higher is better)",
              ("ms", "s"): "latency relative to the first run (lower is better)"}
    figure = Figure(figsize=(12, 16))
    FigureCanvasAgg(figure)
    for row, (units, title) in enumerate(panels.items(), start=1):
        axes = figure.add_subplot(len(panels), 1, row)
        series = {}
        for index, record in enumerate(records):
            for name, figures in record["figures"].items():
                for key, value in figures.items():
                    if isinstance(value, dict) and value.get("unit") in units:
                        series.setdefault(f"{name} {key}", []).append((index, value["median"]))
        for label, points in sorted(series.items()):
            first = points[0][1]
            axes.plot([i for i, _ in points], [v / first for _, v in points], marker="o", label=label)
        axes.axhline(1.0, color="grey", linewidth=0.8)
        axes.set_title(f"{title}; {cpu}", fontsize=10)
        axes.set_xticks(range(len(records)))
        axes.set_xticklabels([f"{r['time'][:16]}\n{r.get('commit') or ''}{' quick' if r['quick'] else ''}"
                              for r in records], fontsize=7)
        if series:
            axes.legend(fontsize=6.5, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def performance_section(record):
    """The generated part of docs/performance.md: the latest record as tables."""
    cpu = record["cpu"]
    lines = [
        f"Latest `python benchmarks/run_all.py{' --quick' if record['quick'] else ''}` "
        f"({record['time']}, commit {record.get('commit')}): {cpu['model']}, {cpu['cores']} cores "
        f"(flags: {', '.join(cpu['flags'])}), Python {record['python']}, TensorFlow {record['tensorflow']}, "
        f"Keras {record['keras']}, onnxruntime {record['onnxruntime']}. Random inputs of CIFAR-10 "
        "shape, batch 128 for training; medians (best in brackets). History: "
        "`docs/benchmarks/history.jsonl`, plot: `docs/benchmarks/history.png`.",
        "",
        "| measurement | figures |",
        "|---|---|",
    ]
    for name, figures in record["figures"].items():
        lines.append(f"| {name} | {describe(figures)} |")
    return "\n".join(lines)


def update_performance_doc(record, path=PERFORMANCE):
    replace_section(path, performance_section(record), "Every figure, latest run")


def update_serving_doc(record, path=SERVING):
    """The serving tables of docs/serving.md, when this run measured them."""
    _update_table(record, path, SERVE_RUN, "an untrained ResNet-20 (the cost of a request does not depend "
                  "on the weights)", "Measured under concurrent load")


def update_export_doc(record, path=EXPORT):
    """The explain-graph and attribution-method tables of docs/export.md, when this run measured them."""
    versions = f"TensorFlow {record['tensorflow']}, onnxruntime {record['onnxruntime']}"
    _update_table(record, path, EXPLAIN_ONNX_RUN, versions, "Explanation latency: ONNX Runtime vs TensorFlow")
    _update_table(record, path, ATTRIBUTION_RUN, versions, "Attribution latency: ONNX Runtime vs TensorFlow",
                  marker="run_all:attributions")


def _update_table(record, path, run_name, what, heading, marker="run_all"):
    tables = record.get("tables", {}).get(run_name)
    if tables:
        only = f" --only {' '.join(record['only'])}" if record.get("only") else ""
        header = (f"Latest `python benchmarks/run_all.py{' --quick' if record['quick'] else ''}{only}` "
                  f"({record['time']}, commit {record.get('commit')}), {what}.\n\n")
        replace_section(path, header + tables.rstrip(), heading, marker)


def replace_section(path, body, heading, marker="run_all"):
    """Replaces the part of `path` that `marker`'s comments enclose, or appends it under `heading`."""
    sys.path.insert(0, REPO)
    from keras_robust.common.atomic import write_atomically

    text = open(path, encoding="utf-8").read()
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    section = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n" + section + "\n"
    write_atomically(path, text)


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-20, fewer configurations (about 5 min)")
    parser.add_argument("--only", nargs="+", help="run only the measurements whose name contains a word")
    parser.add_argument("--no-record", action="store_true", help="print only; keep history and docs as they are")
    parser.add_argument("--part", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(PARTS[args.part[0]](*args.part[1:])))
        return
    record = run(args.quick, args.only)
    if args.no_record:
        return
    append_history(record)
    draw_history(read_history())
    if not args.only:  # the page's table is one whole run's; a partial run would cut it short
        update_performance_doc(record)
    update_serving_doc(record)
    update_export_doc(record)
    print(f"recorded in {os.path.relpath(HISTORY, REPO)}; plot {os.path.relpath(PLOT, REPO)}; "
          f"{os.path.relpath(PERFORMANCE, REPO)}, {os.path.relpath(SERVING, REPO)} and "
          f"{os.path.relpath(EXPORT, REPO)} updated")


if __name__ == "__main__":
    main()
