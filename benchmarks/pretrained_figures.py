"""Measured figures of the shipped networks: test accuracy and attack/BTR ARA.

    nohup python benchmarks/pretrained_figures.py --data ../shared/data/cifar10-jpeg.tar.gz \
        --n-images 200 --out runs/pretrained-figures --update-cards > runs/pretrained-figures.log 2>&1 &

For each of `keras_robust.pretrained_names()`: accuracy on the whole test
split, then attack and BTR ARA on the first `--n-images` of the seed-1776
permutation with the reference attack (450 steps, rho 20, momentum 0.9).
The ARA checkpoints after every batch (`--out/NAME/ara.npz`), so rerunning
the same command after a kill continues where it stopped. Writes
`--out/NAME/evaluation.json` and the ARA curve; `--update-cards` also writes
the figures into the package's cards (`pretrained_card(name)["measured"]`).
"""

import argparse
import json
import os
import platform
import time

import numpy as np


def cpu_name():
    """The CPU's model name, with the vector extensions that matter to TensorFlow's kernels."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            info = dict(line.split(":", 1) for line in file.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        return platform.processor() or "unknown CPU"
    info = {key.strip(): value.strip() for key, value in info.items()}
    flags = set(info.get("flags", "").split())
    extensions = [name for flag, name in (("avx512f", "AVX-512"), ("avx512_bf16", "BF16"), ("amx_tile", "AMX"))
                  if flag in flags]
    return info.get("model name", "unknown CPU") + (f" ({', '.join(extensions)})" if extensions else "")


def bootstrap_se(result, area, resamples=1000, seed=0):
    """Standard error of each ARA over the images, from resampling them with replacement."""
    draw = np.random.default_rng(seed)
    spread = {}
    for mode, sizes in (("l2min", result.attack_min_rmse), ("btr", result.btr_min_rmse)):
        picks = draw.integers(0, len(sizes), (resamples, len(sizes)))
        spread[mode] = float(np.std([area(sizes[p], result.num_classes) for p in picks]))
    return spread


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the JPEG CIFAR-10 archive or another test source")
    parser.add_argument("--n-images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--models", nargs="+", help="names (default: all shipped networks)")
    parser.add_argument("--out", default="runs/pretrained-figures")
    parser.add_argument("--update-cards", action="store_true",
                        help="write the figures into keras_robust/model_zoo/files/*.json")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras_robust
    from keras_robust.common.atomic import write_atomically
    from keras_robust.data import load_dataset
    from keras_robust.evaluation.accuracy_robustness import accuracy_robustness_area, ara, evaluation_indices
    from keras_robust.models.zoo.catalog import card_path
    from keras_robust.reporting import plots

    data = load_dataset(args.data, "test", batch_size=1000)
    images, labels = data.arrays()
    chosen = evaluation_indices(len(images), args.n_images)
    for name in args.models or keras_robust.pretrained_names():
        out = os.path.join(args.out, name)
        os.makedirs(out, exist_ok=True)
        evaluation_path = os.path.join(out, "evaluation.json")
        previous = {}
        if os.path.exists(evaluation_path):
            with open(evaluation_path, encoding="utf-8") as file:
                previous = json.load(file)
        model = keras_robust.pretrained(name)
        start = time.perf_counter()
        predicted = np.argmax(model.predict(images, batch_size=500, verbose=0), axis=1)
        accuracy = float(np.mean(predicted == labels))
        accuracy_seconds = time.perf_counter() - start
        print(f"{name}: test accuracy {accuracy:.4f} on {len(images)} images ({accuracy_seconds:.0f} s)",
              flush=True)
        start = time.perf_counter()
        result = ara(model, images[chosen], labels[chosen], batch_size=args.batch_size,
                     checkpoint=os.path.join(out, "ara.npz"))
        ara_seconds = time.perf_counter() - start
        plots.ara_curve(result, os.path.join(out, "ara_curve.png"))
        spread = bootstrap_se(result, accuracy_robustness_area)
        measured = {
            "data": "JPEG CIFAR-10 test split (quality 75; ../shared/data/cifar10-jpeg.tar.gz), "
            "decoded with Pillow",
            "test_accuracy": accuracy,
            "test_images": int(len(images)),
            "attack_ara": result.attack_ara,
            "btr_ara": result.btr_ara,
            "ara_images": int(args.n_images),
            "attack_ara_bootstrap_se": spread["l2min"],
            "btr_ara_bootstrap_se": spread["btr"],
            "ara_clean_accuracy": result.clean_accuracy,
            "ara_settings": {"steps": 450, "rho": 20.0, "momentum": 0.9, "overshoot": 1.0,
                             "subset": f"first {args.n_images} of the seed-1776 permutation"},
            # Summed over the runs that worked on this evaluation (a resumed one adds its part).
            "ara_seconds": round(previous.get("ara_seconds", previous.get("ara_seconds_this_run", 0.0))
                                 + ara_seconds, 1),
            "machine": f"{cpu_name()}, {os.cpu_count()} cores, TensorFlow CPU, float32",
            "command": "python benchmarks/pretrained_figures.py --data ../shared/data/cifar10-jpeg.tar.gz "
            f"--n-images {args.n_images} --update-cards",
        }
        write_atomically(evaluation_path, json.dumps(measured, indent=1) + "\n")
        print(f"{name}: attack ARA {result.attack_ara:.4f} ± {spread['l2min']:.4f}, BTR ARA "
              f"{result.btr_ara:.4f} ± {spread['btr']:.4f} (bootstrap SE) on "
              f"{args.n_images} images ({measured['ara_seconds']:.0f} s of ARA in all)", flush=True)
        if args.update_cards:
            path = card_path(name)
            with open(path, encoding="utf-8") as file:
                card = json.load(file)
            card["measured"] = measured
            write_atomically(path, json.dumps(card, indent=1) + "\n")


if __name__ == "__main__":
    main()
