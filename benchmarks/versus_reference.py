"""keras-robust against the authors' PyTorch code, side by side in one run.

    python benchmarks/versus_reference.py --torch-python $TORCH_VENV/bin/python
    python benchmarks/versus_reference.py --depths 20 --precisions fp32 --ara-images 4 --repeats 1   # shorter
    python benchmarks/versus_reference.py --torch-python ... --bf16-depths 20   # a CPU without bf16 units
    python benchmarks/versus_reference.py              # no torch Python: our side only, said so

A ratio between two frameworks means something only when both run on one
quiet machine in one session, so each configuration runs ours, then the
reference, each in a fresh process: ResNet-20 and -44, the four training
modes (random CIFAR-shaped batches of 128, median step over at least
`--budget-s` seconds after two warm-up steps), float32 and bfloat16 (ours
under Keras' `mixed_bfloat16`, the reference under `torch.autocast`, as a
PyTorch user runs it), then ARA (both attacks, 450 steps, ρ 20, momentum 0.9,
on `--ara-images` random images; half-Huber ResNet-`--ara-depth`, randomly
initialised). Ours is `RobustModel` with `compile()`'s defaults, XLA off.
Each side runs `--repeats` times per configuration, alternating with the
other, and the table shows each side's median. A run during which other
processes kept the cores busy (`quiet.py`) is run again, and a machine that
stays busy stops the benchmark: the reference suffers far more from a busy
neighbour than we do, so such a run would flatter us.

The reference is `../shared/anchors` (the authors' `main.py` and `model.py`,
unchanged, and its `ref_speed.py`/`ref_ara_speed.py` drivers); torch lives in
a virtual environment of its own (see that folder's README) and is never a
dependency of keras-robust. A finished run with both sides replaces the
generated table of `docs/performance.md` ("Against the authors' PyTorch
code") and appends its record to `docs/benchmarks/versus_reference.jsonl`; a
run that stops part-way writes neither.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from quiet import QUIET_LIMIT_CORES, run_measured  # noqa: E402
from run_all import PERFORMANCE, append_history, machine_record, replace_section  # noqa: E402

DEFAULT_REFERENCE = os.path.join(REPO, "..", "shared", "anchors")
HISTORY = os.path.join(REPO, "docs", "benchmarks", "versus_reference.jsonl")
MODES = ("standard", "robust", "adversarial", "robust+adversarial")
MARKER = "versus_reference"
# Runs of one side of one configuration before a busy machine stops the benchmark.
ATTEMPTS = 3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_reference_arguments(parser)
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 44])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--budget-s", type=float, default=20.0, help="timing per configuration and side")
    parser.add_argument("--ara-depth", type=int, default=20)
    parser.add_argument("--ara-images", type=int, default=32, help="0: no ARA")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of each side per configuration, alternating; the table shows the medians")
    parser.add_argument("--bf16-depths", type=int, nargs="+",
                        help="depths measured in bf16 (default --depths; a CPU without bf16 units emulates it slowly)")
    parser.add_argument("--no-record", action="store_true", help="print only; keep docs and history")
    parser.add_argument("--ours-ara", nargs=2, type=int, metavar=("DEPTH", "IMAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ours_ara:
        print(json.dumps(ours_ara(*args.ours_ara)))
        return 0
    try:
        reference = check_reference(args.torch_python, args.reference)
    except ValueError as error:
        print(f"versus_reference: {error}", file=sys.stderr)
        return 2
    record = {"kind": MARKER, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **machine_record(),
              "reference": reference, "repeats": args.repeats, "options": _options(sys.argv[1:])}
    print(f"{record['cpu']['model']}, {record['cpu']['cores']} cores; "
          + (f"reference: torch {reference['torch']}" if reference else
             "no torch Python given (--torch-python): our side only, no ratios"), flush=True)
    try:
        record["rows"] = measure(args, reference)
    except RuntimeError as error:  # a side failed part-way: nothing is recorded
        print(f"versus_reference: {error}", file=sys.stderr)
        return 1
    table = markdown(record)
    print("\n" + table)
    if reference and not args.no_record:
        replace_section(PERFORMANCE, table, "Against the authors' PyTorch code", marker=MARKER)
        append_history(record, HISTORY)
        print(f"wrote the table into {PERFORMANCE} and the record into {HISTORY}")
    return 0


def measure(args, reference):
    """Every configuration's `_pair`, the training steps first, then ARA."""
    rows = []
    bf16_depths = args.depths if args.bf16_depths is None else args.bf16_depths
    for depth in args.depths:
        for precision in args.precisions:
            if precision == "bf16" and depth not in bf16_depths:
                continue
            for mode in args.modes:
                rows.append(_pair(f"ResNet-{depth} {precision} {mode}",
                                  ours_step_command(depth, mode, precision, args.budget_s),
                                  reference and reference_step_command(reference, depth, mode, precision),
                                  args.repeats))
    if args.ara_images:
        rows.append(_pair(f"ARA ResNet-{args.ara_depth} half-Huber, {args.ara_images} images",
                          [sys.executable, __file__, "--ours-ara", str(args.ara_depth), str(args.ara_images)],
                          reference and reference_ara_command(reference, args.ara_depth, args.ara_images),
                          args.repeats))
    return rows


def check_reference(torch_python, folder):
    """The reference side's set-up, or None without a torch Python; ValueError naming what is wrong."""
    scripts = [os.path.join(folder, name) for name in ("ref_speed.py", "ref_ara_speed.py",
                                                       os.path.join("reference", "main.py"))]
    missing = [path for path in scripts if not os.path.isfile(path)]
    if missing:
        raise ValueError(f"the reference folder lacks {', '.join(missing)}. Received: --reference {folder}")
    if not torch_python:
        return None
    # The drivers import the authors' main.py, which needs click and torchvision besides torch.
    probe_code = ("import os, sys; sys.path.insert(0, sys.argv[1]); os.environ.setdefault('CIFAR10_PATH', "
                  "'/nonexistent'); import torch, main, model; print(torch.__version__)")
    try:
        probe = subprocess.run([torch_python, "-c", probe_code, os.path.join(folder, "reference")],
                               capture_output=True, text=True, timeout=300)
    except OSError as error:
        raise ValueError(f"cannot run the torch Python: {error.strerror}. Received: --torch-python "
                         f"{torch_python}") from None
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"the torch Python cannot import torch and the reference ({last}); set it up as "
                         f"{os.path.join(folder, 'README.md')} says. Received: --torch-python {torch_python}")
    return {"python": torch_python, "folder": os.path.abspath(folder), "torch": probe.stdout.strip()}


def ours_step_command(depth, mode, precision, budget_s):
    return [sys.executable, os.path.join(HERE, "train_speed.py"), "--one", str(depth), mode, "off", precision,
            "--budget-s", str(budget_s)]


def reference_step_command(reference, depth, mode, precision):
    return ["env", f"PREC={precision}", reference["python"], os.path.join(reference["folder"], "ref_speed.py"),
            str(depth), mode]


def reference_ara_command(reference, depth, images):
    return [reference["python"], os.path.join(reference["folder"], "ref_ara_speed.py"), str(depth), "robust",
            str(images)]


def ours_ara(depth, images):
    """Both ARA attacks of `keras_robust.ara`'s procedure on random images, as the reference's driver runs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    import keras_robust
    from keras_robust.method.attacks import attack_details

    classifier = keras_robust.resnet(depth, activation="half_huber_relu")
    rng = np.random.default_rng(0)
    x = rng.random((images, 32, 32, 3), dtype="float32")
    y = rng.integers(0, 10, images)
    begin = time.perf_counter()
    for mode in ("l2min", "btr"):
        attack_details(classifier, x, y, rho=20.0, steps=450, mode=mode, momentum=0.9,
                       sanity_check=False).rmse.numpy()
    seconds = time.perf_counter() - begin
    return {"images_per_s": images / seconds, "seconds": seconds}


def _pair(name, ours_command, reference_command, repeats):
    """Ours, then the reference, `repeats` times, in fresh processes: `{"name", "ours", "reference"}`, the
    median images/s of each side, every run's figure under `"ours_runs"`/`"reference_runs"`, and the most
    cores other processes kept busy during any of them under `"others_cores"`."""
    row = {"name": name, "ours_runs": [], "reference_runs": [], "others_cores": 0.0}
    sides = [("ours", ours_command)] + ([("reference", reference_command)] if reference_command else [])
    for _ in range(repeats):
        for side, command in sides:
            # Without the reference there is no ratio for a busy machine to skew.
            images_per_s, others = _images_per_s(command, f"{name}, {side}", quiet=reference_command is not None)
            row[f"{side}_runs"].append(images_per_s)
            row["others_cores"] = max(row["others_cores"], others or 0.0)
    row["ours"] = statistics.median(row["ours_runs"])
    line = f"{name:<46} ours {row['ours']:8.2f}"
    if reference_command:
        row["reference"] = statistics.median(row["reference_runs"])
        line += f"  reference {row['reference']:8.2f} = {row['ours'] / row['reference']:.2f}×"
    print(line, flush=True)
    return row


def _images_per_s(command, name, quiet=True):
    """The command's images/s and the cores other processes kept busy meanwhile; with `quiet`, a run during
    which they kept more than `QUIET_LIMIT_CORES` busy is run again, up to `ATTEMPTS` times in all."""
    for _ in range(ATTEMPTS):
        images_per_s, others = run_once(command)
        if not quiet or others is None or others <= QUIET_LIMIT_CORES:
            return images_per_s, others
        print(f"{name}: other processes kept {others:.2f} cores busy meanwhile; running it again", flush=True)
    raise RuntimeError(f"the machine is not quiet: other processes kept {others:.2f} cores busy while {name} "
                       f"ran, {ATTEMPTS} times (limit {QUIET_LIMIT_CORES}); nothing recorded")


def run_once(command):
    """The images/s the command prints last and the cores other processes kept busy meanwhile
    (`quiet.run_measured`); RuntimeError with its last line of errors if it fails."""
    run, others = run_measured(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if run.returncode:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{' '.join(command)} failed: {last}")
    return json.loads(run.stdout.strip().splitlines()[-1])["images_per_s"], others


def add_reference_arguments(parser, without="none: our side only"):
    """`--torch-python` and `--reference`, as every side-by-side benchmark takes them."""
    parser.add_argument("--torch-python", default=os.environ.get("KERAS_ROBUST_TORCH_PYTHON"),
                        help=f"a Python with torch (default $KERAS_ROBUST_TORCH_PYTHON); {without}")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="the anchors folder")


def _options(arguments):
    """The command line's options as the docs show them: the torch Python's path is this machine's."""
    shown = []
    for argument in arguments:
        shown.append("$TORCH_VENV/bin/python" if shown and shown[-1] == "--torch-python" else argument)
    return "".join(f" {argument}" for argument in shown)


def markdown(record):
    cpu = record["cpu"]
    reference = record["reference"]
    repeats = record.get("repeats", 1)
    lines = [f"`python benchmarks/versus_reference.py{record.get('options', '')}` ({record['time']}, commit {record.get('commit')}): "
             f"{cpu['model']}, {cpu['cores']} cores (flags: {', '.join(cpu['flags'])}), TensorFlow "
             f"{record['tensorflow']}, Keras {record['keras']}"
             + (f", torch {reference['torch']}" if reference else "; no reference run") + ". Images/s; each "
             f"configuration ran ours, then the reference, in fresh processes, {repeats} time{'s' * (repeats > 1)} "
             f"alternating{'; the medians' * (repeats > 1)}; training on random batches of 128, "
             "ours `RobustModel` + `compile()` defaults (XLA off), bf16 = Keras `mixed_bfloat16` against "
             "`torch.autocast`." + _quiet_sentence(record["rows"]), "",
             "| configuration | keras-robust | reference | ours / reference |", "|---|---|---|---|"]
    for row in record["rows"]:
        if "reference" in row:
            lines.append(f"| {row['name']} | {row['ours']:.2f} | {row['reference']:.2f} | "
                         f"{row['ours'] / row['reference']:.2f}× |")
        else:
            lines.append(f"| {row['name']} | {row['ours']:.2f} | not run | |")
    return "\n".join(lines)


def _quiet_sentence(rows):
    busiest = [row["others_cores"] for row in rows if "others_cores" in row]
    if not busiest:
        return ""
    return (f" Other processes kept at most {max(busiest):.2f} cores busy during any timed run "
            f"(`/proc/stat`; a run above {QUIET_LIMIT_CORES} is run again).")


if __name__ == "__main__":
    sys.exit(main())
