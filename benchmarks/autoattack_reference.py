"""AutoAttack in Keras beside the PyTorch original, on the authors' ResNet-44s and the same JPEG test images.

    python benchmarks/autoattack_reference.py --torch-python $TORCH_VENV/bin/python --autoattack <checkout>
    python benchmarks/autoattack_reference.py --report     # writes the table of --json into docs/results.md

For each network (the reference names standard, adv-train, robust, all: the paper's N1, N2, N4, N3), it
runs `keras_robust.autoattack` on the shipped Keras network and, interleaved, the original
(fra31/auto-attack, standard version, seed 0) on the authors' PyTorch network with the same arrays
(`autoattack_reference_torch.py`, in the torch virtual environment of ../shared/anchors; torch is
never a dependency of this package), on the first --images of the seed-1776 permutation of the JPEG
test split. Records each side's robust accuracy, the share of images whose verdict agrees, and the wall
time per image; every network's figures are written as soon as they exist, and a rerun skips those done.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from keras_robust.common.atomic import write_atomically  # noqa: E402 (keras_robust before TensorFlow)
from keras_robust.common.machine import cpu_summary  # noqa: E402

# Reference name -> (the shipped Keras network, the paper's name).
NETWORKS = {"standard": ("resnet44-cifar10-standard", "N1"), "adv-train": ("resnet44-cifar10-adv-train", "N2"),
            "all": ("resnet44-cifar10-all", "N3"), "robust": ("resnet44-cifar10-robust", "N4")}
JSON = "docs/figures/autoattack_reference.json"
DOC = "docs/results.md"
BEGIN, END = "<!-- autoattack_reference:begin -->", "<!-- autoattack_reference:end -->"
TORCH_SIDE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "autoattack_reference_torch.py")
# The goals: robust accuracy within this many points, verdicts equal on at least this share.
POINTS, AGREEMENT = 1.0, 0.97


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--images", type=int, default=500, help="test images (500)")
    parser.add_argument("--norm", choices=("L2", "Linf"), default="L2")
    parser.add_argument("--eps", type=float, default=0.5)
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz")
    parser.add_argument("--torch-python", help="the Python of the torch virtual environment")
    parser.add_argument("--autoattack", help="a checkout of fra31/auto-attack, when not installed there")
    parser.add_argument("--out", default="runs/autoattack_reference",
                        help="each side's checkpoint, so a stopped run continues (ours per batch, the original's "
                             "per attack)")
    parser.add_argument("--json", default=JSON)
    parser.add_argument("--report", action="store_true", help="write the table of --json into docs/results.md")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_arguments(argv)
    if args.report:
        write_report(json.load(open(args.json, encoding="utf-8")))
        return
    if not args.torch_python or not os.path.exists(args.torch_python):
        raise SystemExit("autoattack_reference: --torch-python must name the torch environment's Python "
                         f"(../shared/anchors/README.md). Received: {args.torch_python}")
    import keras_robust
    from keras_robust.data import load_dataset
    from keras_robust.evaluation.accuracy_robustness import evaluation_indices

    test = load_dataset(args.data, "test", batch_size=500)
    images, labels = test.arrays()
    chosen = evaluation_indices(len(labels), args.images)
    images, labels = images[chosen], labels[chosen]
    record = _read(args.json)
    key_of = lambda network: f"{network} {args.norm} {args.eps:g} {args.images}"  # noqa: E731
    with tempfile.TemporaryDirectory() as work:
        saved = os.path.join(work, "images.npz")
        np.savez(saved, images=images, labels=labels)
        for network in args.networks:
            if key_of(network) in record["runs"]:
                print(f"{key_of(network)}: done, in {args.json}", flush=True)
                continue
            os.makedirs(args.out, exist_ok=True)
            stem = os.path.join(args.out, key_of(network).replace(" ", "-"))
            # A resumed run's clock misses what ran before: its times are not recorded.
            resumed = os.path.exists(stem + "-ours.npz") or os.path.exists(stem + "-original.json")
            start = time.perf_counter()
            ours = keras_robust.autoattack(keras_robust.pretrained(NETWORKS[network][0]), images, labels,
                                           norm=args.norm, eps=args.eps, seed=0, checkpoint=stem + "-ours.npz")
            our_seconds = time.perf_counter() - start
            theirs = _reference(args, network, saved, work, stem + "-original.json")
            record["runs"][key_of(network)] = _comparison(network, ours, None if resumed else our_seconds, theirs, args)
            record.update(machine=cpu_summary(), data=args.data)
            write_atomically(args.json, json.dumps(record, indent=2))
            print(json.dumps(record["runs"][key_of(network)]), flush=True)
    print(report_markdown(record))


def _read(path):
    if os.path.exists(path):
        return json.load(open(path, encoding="utf-8"))
    return {"runs": {}}


def _reference(args, network, saved, work, state):
    out = os.path.join(work, f"{network}.json")
    environment = {**os.environ, **({"AUTOATTACK": args.autoattack} if args.autoattack else {})}
    subprocess.run([args.torch_python, TORCH_SIDE, network, saved, out, args.norm, str(args.eps), state],
                   check=True, env=environment)
    return json.load(open(out, encoding="utf-8"))


def _comparison(network, ours, our_seconds, theirs, args):
    reference_robust = np.asarray(theirs["robust"], bool)
    return {
        "network": network, "paper_name": NETWORKS[network][1], "norm": args.norm, "eps": args.eps,
        "images": int(ours.robust.size), "clean_accuracy_ours": ours.clean_accuracy,
        "clean_accuracy_reference": float(np.mean(theirs["clean_correct"])),
        "robust_accuracy_ours": ours.robust_accuracy, "robust_accuracy_reference": float(reference_robust.mean()),
        "verdicts_agree": float(np.mean(ours.robust == reference_robust)),
        "seconds_per_image_ours": None if our_seconds is None else our_seconds / ours.robust.size,
        "seconds_per_image_reference": None if our_seconds is None else theirs["seconds"] / ours.robust.size,
        "torch": theirs["torch"],
    }


def report_markdown(record):
    lines = ["| network | norm, ε | images | robust accuracy, ours | robust accuracy, PyTorch original | "
             "verdicts agree | seconds per image, ours / original |", "|---|---|---|---|---|---|---|"]
    sentences = []
    for run in record["runs"].values():
        gap = 100 * (run["robust_accuracy_ours"] - run["robust_accuracy_reference"])
        lines.append(f"| {run['paper_name']} ({run['network']}) | {run['norm']} {run['eps']:g} | {run['images']} | "
                     f"{100 * run['robust_accuracy_ours']:.1f} % | {100 * run['robust_accuracy_reference']:.1f} % | "
                     f"{100 * run['verdicts_agree']:.1f} % | {_times(run)} |")
        met = abs(gap) <= POINTS and run["verdicts_agree"] >= AGREEMENT
        sentences.append(f"{run['paper_name']}: {gap:+.1f} points, {100 * run['verdicts_agree']:.1f} % of verdicts "
                         f"equal: {'within' if met else 'outside'} the goal ({POINTS:g} point, "
                         f"{100 * AGREEMENT:.0f} %).")
    caption = (f"`python benchmarks/autoattack_reference.py` on {record.get('machine')}, JPEG CIFAR-10 test images "
               "(the seed-1776 permutation's first), both sides run in turn on one machine.")
    measured = {run["network"] for run in record["runs"].values()}
    missing = [paper for network, (_, paper) in NETWORKS.items() if network not in measured]
    if missing:
        sentences.append(f"Not measured yet: {', '.join(missing)}.")
    return "\n".join([caption, "", *lines, "", *sentences])


def _times(run):
    if run["seconds_per_image_ours"] is None:
        return "not timed (resumed)"
    return f"{run['seconds_per_image_ours']:.2f} / {run['seconds_per_image_reference']:.2f}"


def write_report(record, doc=DOC):
    text = open(doc, encoding="utf-8").read()
    if BEGIN not in text:
        text = text.rstrip("\n") + f"\n\n## AutoAttack beside the PyTorch original\n\n{BEGIN}\n{END}\n"
    before, rest = text.split(BEGIN)
    _, after = rest.split(END)
    write_atomically(doc, before + BEGIN + "\n" + report_markdown(record) + "\n" + END + after)


if __name__ == "__main__":
    main()
