"""Explanation latency, ARA throughput and ARA of trained models (issue: docs/method.md §5-§6).

    python benchmarks/explain_ara.py --models runs/standard/model.keras runs/robust/model.keras \
        --data ../shared/data/cifar10-jpeg.tar.gz --n-images 200 --out docs/figures

Prints, per model: the latency of explaining one image toward 12 targets
(true, runner-up, 10 classes; 35 steps), ARA images/s at 450 steps, and attack
and BTR ARA on the same fixed test subset (seed 1776); writes the curves and
a JSON of the figures to --out, and explanation grids (which show data-set
images, never to be committed) to --pictures-out.
"""

import argparse
import json
import os
import time

import numpy as np

from keras_robust.common import onednn as _onednn  # noqa: F401  (before TensorFlow: its oneDNN kernels on, as users get them)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--n-images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--out", default="docs/figures", help="curves and JSON")
    # Explanation grids show data-set images, which must not be committed.
    parser.add_argument("--pictures-out", default="runs/pictures", help="explanation grids")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from keras_robust.data import load_dataset
    from keras_robust.evaluation.accuracy_robustness import ara, evaluation_indices
    from keras_robust.explanations.adversarial import AdversarialExplainer
    from keras_robust.reporting import plots

    data = load_dataset(args.data, "test", batch_size=1000)
    images, labels = data.arrays()
    chosen = evaluation_indices(len(images), args.n_images)
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.pictures_out, exist_ok=True)
    figures = {}
    for path in args.models:
        name = os.path.basename(os.path.dirname(os.path.abspath(path)))
        model = keras.saving.load_model(path, compile=False)
        model = getattr(model, "classifier", model)
        accuracy = float(np.mean(np.argmax(model.predict(images, verbose=0, batch_size=500), 1) == labels))
        # Off so that a standard network's explanations can be timed and shown;
        # how many of them pass docs/method.md §4's budget check is reported instead.
        explainer = AdversarialExplainer(model, class_names=data.class_names, sanity_check=False)
        explainer.explain_standard(images[:1], labels[:1])  # trace once
        start = time.perf_counter()
        result = explainer.explain_standard(images[:1], labels[:1])
        latency = time.perf_counter() - start
        grid = explainer.explain_standard(images[chosen[:4]], labels[chosen[:4]])
        checked = explainer.explain_standard(images[chosen[:20]], labels[chosen[:20]]).first_met_step
        within = float(np.mean((checked >= 0) & (checked <= explainer.steps // 2)))
        plots.explanation_grid(grid, os.path.join(args.pictures_out, f"explanations_{name}.png"))
        start = time.perf_counter()
        scores = ara(model, images[chosen], labels[chosen], batch_size=args.batch_size)
        seconds = time.perf_counter() - start
        plots.ara_curve(scores, os.path.join(args.out, f"ara_{name}.png"))
        figures[name] = {
            "model": path,
            "test_accuracy_10000": accuracy,
            "explain_1_image_12_targets_s": latency,
            "explain_targets": int(result.targets.shape[1]),
            "explanations_passing_budget_check_20_images": within,
            "ara_images_per_s_450_steps_both_modes": args.n_images / seconds,
            **scores.to_dict(),
        }
        print(json.dumps({name: figures[name]}, indent=2), flush=True)
    with open(os.path.join(args.out, "explain_ara.json"), "w") as f:
        json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
