"""Where a training step's time goes, kernel class by kernel class: ours and the authors' PyTorch code.

    python benchmarks/onednn_breakdown.py --torch-python $TORCH_VENV/bin/python
    python benchmarks/onednn_breakdown.py --depth 44 --modes robust --precisions bf16   # ours only

Both frameworks run their CPU convolutions through oneDNN, which reports the
kernel it chose and the time of every call with `ONEDNN_VERBOSE=1`. Each
configuration runs once per side in a fresh process with that switch: ours
through `train_speed.py`'s step (`RobustModel`, `compile()` defaults), the
reference through its own `ref_speed.py`. The per-call times are summed per
kernel class (each convolution pass with the kernels and source layout it
got, layout reorders, every other oneDNN primitive) and divided by the steps
run; what is left of the step ("the framework's own kernels") is the work
each framework does outside oneDNN: batch norm, activations, residual adds,
the optimizer. Verbose logging slows each call a little, so the step time
beside the classes is the same logged run's median step.

With `--torch-python` and no `--no-record`, the tables replace the generated
section of `docs/performance.md` and the figures go to
`docs/figures/onednn_breakdown.json`.
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run_all import PERFORMANCE, REPO, machine_record, replace_section  # noqa: E402
from versus_reference import (  # noqa: E402
    MODES,
    add_reference_arguments,
    check_reference,
    ours_step_command,
    reference_step_command,
)

from keras_robust.common.atomic import write_atomically  # noqa: E402

FIGURES = os.path.join(REPO, "docs", "figures", "onednn_breakdown.json")
MARKER = "onednn_breakdown"
WARM_UP_STEPS = 2  # both drivers run two untimed steps first; their calls are logged too
OWN_KERNELS = "the framework's own kernels"


def kernel_classes(log, steps):
    """`{class: {"ms": per step, "kernels": [...]}}` from a verbose log of `steps` steps.

    A convolution's class is its pass (`forward_training`, `backward_data`,
    `backward_weights`); every other primitive's is its kind.
    """
    ms = collections.Counter()
    kernels = collections.defaultdict(set)
    for line in log.splitlines():
        fields = line.split(",")
        if len(fields) < 9 or not fields[0].endswith("_verbose") or fields[2:4] != ["primitive", "exec"]:
            continue
        kind, kernel, propagation = fields[5], fields[6], fields[7]
        name = f"convolution {propagation}" if kind == "convolution" else kind
        ms[name] += float(fields[-1]) / steps
        label = f"{kernel} ({_source_layout(fields[8])})" if kind == "convolution" else kernel
        kernels[name].add(label)
    return {name: {"ms": ms[name], "kernels": sorted(kernels[name])} for name in ms}


def _source_layout(descriptors):
    """The source tensor's data type and layout tag from a verbose line's memory descriptors.

    A descriptor reads `src:f32::blocked:acdb::f0` (`acdb` is NHWC, `aBcd8b` channel blocks of 8).
    """
    for descriptor in descriptors.split():
        parts = descriptor.split(":")
        if parts[0] in ("src", "diff_src") and len(parts) > 4:
            return f"{parts[1]} {parts[4]}"
    return "?"


def breakdown(command):
    """One logged run of a step driver: `{"step_ms", "classes"}`."""
    run = subprocess.run(command, capture_output=True, text=True,
                         env={**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    if run.returncode:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{' '.join(command)} failed: {last}")
    result = json.loads(next(line for line in reversed(run.stdout.splitlines()) if line.startswith("{")))
    classes = kernel_classes(run.stdout, result["steps_timed"] + WARM_UP_STEPS)
    step_ms = 1000 * result["step_s"]
    classes[OWN_KERNELS] = {"ms": max(0.0, step_ms - sum(c["ms"] for c in classes.values())), "kernels": []}
    return {"step_ms": step_ms, "classes": classes}


def markdown(name, ours, reference):
    """One configuration's table: a row per kernel class, both sides' ms per step."""
    sides = [("keras-robust", ours)] + ([("reference", reference)] if reference else [])
    names = sorted({c for _, side in sides for c in side["classes"]},
                   key=lambda c: (c == OWN_KERNELS, -max(side["classes"].get(c, {"ms": 0})["ms"] for _, side in sides)))
    header = "| " + name + " | " + " | ".join(f"{label} ms | kernels" for label, _ in sides) + " |"
    lines = [header, "|---" * (1 + 2 * len(sides)) + "|"]
    lines.append("| **step** | " + " | ".join(f"**{side['step_ms']:.0f}** | " for _, side in sides) + " |")
    for class_name in names:
        cells = []
        for _, side in sides:
            entry = side["classes"].get(class_name)
            cells.append(f"{entry['ms']:.1f} | {', '.join(entry['kernels'])}" if entry else "– | ")
        lines.append(f"| {class_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_reference_arguments(parser)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--budget-s", type=float, default=4.0, help="logged timing per configuration and side")
    parser.add_argument("--no-record", action="store_true", help="print only; keep docs and figures")
    args = parser.parse_args()
    try:
        reference = check_reference(args.torch_python, args.reference)
    except ValueError as error:
        print(f"onednn_breakdown: {error}", file=sys.stderr)
        return 2
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **machine_record(),
              "reference": reference, "configurations": {}}
    tables = []
    try:
        for precision in args.precisions:
            for mode in args.modes:
                name = f"ResNet-{args.depth} {precision} {mode}"
                ours = breakdown(ours_step_command(args.depth, mode, precision, args.budget_s))
                theirs = reference and breakdown(reference_step_command(reference, args.depth, mode, precision))
                record["configurations"][name] = {"ours": ours, "reference": theirs}
                tables.append(markdown(name, ours, theirs))
                print(tables[-1] + "\n", flush=True)
    except RuntimeError as error:
        print(f"onednn_breakdown: {error}", file=sys.stderr)
        return 1
    if reference and not args.no_record:
        cpu = record["cpu"]
        intro = (f"`python benchmarks/onednn_breakdown.py` ({record['time']}, commit {record.get('commit')}): "
                 f"{cpu['model']}, {cpu['cores']} cores (flags: {', '.join(cpu['flags'])}), TensorFlow "
                 f"{record['tensorflow']}, torch {reference['torch']}. Milliseconds per step, batch 128, "
                 "`ONEDNN_VERBOSE=1` on both sides.")
        replace_section(PERFORMANCE, "\n\n".join([intro, *tables]), "Kernel class by kernel class", marker=MARKER)
        write_atomically(FIGURES, json.dumps(record, indent=1))
        print(f"wrote the tables into {PERFORMANCE} and the figures into {FIGURES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
