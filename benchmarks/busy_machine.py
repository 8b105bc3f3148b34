"""What one busy neighbour does to the side-by-side ARA figures.

    python benchmarks/busy_machine.py --torch-python $TORCH_VENV/bin/python
    python benchmarks/busy_machine.py --torch-python ... --images 8 --repeats 1 --json /tmp/busy.json   # shorter

Runs `versus_reference.py`'s ARA configuration (both attacks, 450 steps, on
random images, half-Huber ResNet-20), ours then the reference's, first on the
quiet machine and then beside one process that busy-loops on one core, and
writes each side's median images/s and the cores other processes kept busy
(`quiet.py`) to `--json`, written whole at the end, so a stopped run leaves
the previous file. With the default `--json`
(docs/figures/ara_busy_machine.json) the table also replaces the generated
part of docs/performance.md's "A busy machine". It shows why
`versus_reference.py` runs a busy run again: the two frameworks do not slow
alike.
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
sys.path.insert(0, REPO)
from run_all import PERFORMANCE, machine_record, replace_section  # noqa: E402
from versus_reference import add_reference_arguments, check_reference, reference_ara_command, run_once  # noqa: E402

from keras_robust.common.atomic import write_atomically  # noqa: E402

DEFAULT_JSON = os.path.join(REPO, "docs", "figures", "ara_busy_machine.json")
NEIGHBOURS = ("none", "one busy loop")
MARKER = "busy_machine"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_reference_arguments(parser, without="required")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default=DEFAULT_JSON)
    args = parser.parse_args()
    try:
        if not args.torch_python:
            raise ValueError("it compares two frameworks and needs the reference's. Received: --torch-python "
                             "(none)")
        reference = check_reference(args.torch_python, args.reference)
    except ValueError as error:
        print(f"busy_machine: {error}", file=sys.stderr)
        return 2
    commands = {"ours": [sys.executable, os.path.join(HERE, "versus_reference.py"), "--ours-ara", str(args.depth),
                         str(args.images)],
                "reference": reference_ara_command(reference, args.depth, args.images)}
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **machine_record(),
              "torch": reference["torch"], "depth": args.depth, "images": args.images, "repeats": args.repeats,
              "rows": []}
    try:
        for neighbour in NEIGHBOURS:
            record["rows"] += measure(commands, neighbour, args.repeats)
    except RuntimeError as error:
        print(f"busy_machine: {error}", file=sys.stderr)
        return 1
    write_atomically(args.json, json.dumps(record, indent=2))
    print("\n" + markdown(record) + f"\n\nwrote {args.json}")
    if os.path.abspath(args.json) == DEFAULT_JSON:
        replace_section(PERFORMANCE, markdown(record), "A busy machine", marker=MARKER)
        print(f"wrote the table into {PERFORMANCE}")
    return 0


def measure(commands, neighbour, repeats):
    """Each side's rows beside `neighbour`: median images/s over `repeats` alternating runs, and the most
    cores other processes kept busy during them."""
    runs = {side: [] for side in commands}
    others = {side: [] for side in commands}
    hog = None if neighbour == "none" else subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for _ in range(repeats):
            for side, command in commands.items():
                # One run each, busy or not: the busy runs are what this measures.
                images_per_s, busy = run_once(command)
                runs[side].append(images_per_s)
                others[side].append(busy)
                print(f"neighbour {neighbour}: {side} {runs[side][-1]:.3f} img/s, other processes "
                      f"{'unmeasured' if busy is None else f'{busy:.2f}'} cores", flush=True)
    finally:
        if hog:
            hog.kill()
            hog.wait()
    return [{"neighbour": neighbour, "side": side, "images_per_s": statistics.median(runs[side]),
             "runs": runs[side], "others_cores": max(others[side], key=lambda busy: busy or 0.0)} for side in commands]


def markdown(record):
    """The record as docs/performance.md shows it: what ran where, then the table."""
    cpu = record["cpu"]
    figures = {(row["neighbour"], row["side"]): row for row in record["rows"]}
    lines = [f"`python benchmarks/busy_machine.py --torch-python $TORCH_VENV/bin/python` ({record['time']}, commit "
             f"{record['commit']}): {cpu['model']}, {cpu['cores']} cores, TensorFlow {record['tensorflow']}, torch "
             f"{record['torch']}; ResNet-{record['depth']} half-Huber, {record['images']} random images, both "
             f"attacks; each side {record['repeats']} times alternating, the medians.", "",
             "| beside both sides | keras-robust img/s | reference img/s | ours / reference "
             "| cores other processes kept busy (ours; reference) |", "|---|---|---|---|---|"]
    for neighbour in NEIGHBOURS:
        ours, reference = figures[neighbour, "ours"], figures[neighbour, "reference"]
        lines.append(f"| {neighbour} | {ours['images_per_s']:.3f} | {reference['images_per_s']:.3f} | "
                     f"{ours['images_per_s'] / reference['images_per_s']:.2f}× | "
                     f"{ours['others_cores']:.2f}; {reference['others_cores']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
