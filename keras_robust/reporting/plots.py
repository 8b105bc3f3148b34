"""Pictures of adversarial explanations and of the Accuracy-Robustness Area.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas
attached directly, so that importing this module never touches pyplot or the
user's global backend choice (it works headless and inside notebooks alike).
Every function returns its `Figure` and, given `path`, also saves a PNG.
"""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keras_robust.common.atomic import atomic_path

DPI = 100
# Inches per image cell: large enough for two short lines of 8 pt title text
# above a 32x32 image, small enough that 13 columns (CIFAR-10's standard
# targets plus the input) still fit a wide screen.
CELL_WIDTH = 1.45
CELL_HEIGHT = 1.75
TITLE_SIZE = 8
NOTE_SIZE = 7
# The titles of explanations that fell short of docs/method.md §4's sanity check.
SHORT_COLOR = "#b00020"

EXPLANATION_GRID_GUIDE = """\
How to read the explanation pictures: each image has two rows. Top row: the input as the \
network sees it, then one explanation x + δ per target class (clipped to [0, 1] for display), \
titled with the class and its softmax confidence p before → after (before: on the input x; \
after: on x + δ). With the standard targets the first two are the true class (or, when it is \
not known, the predicted one) and the runner-up, the most confident other class; then every \
class in order. Bottom row: |δ|, how much each pixel had to change (mean over the colour \
channels), on one colour scale per image; bright where the network needed the picture changed. \
An explanation whose δ did not reach its budget ρ by half its steps (the sanity check) is titled \
in red and marked “short of ρ”."""


def explanation_grid(explanation, path=None, max_images=8, class_names=None):
    """Draws each image with its adversarial explanations and their |δ|.

    Each image gets a block of two rows. The first row holds the input and,
    per target, the explanation `x + δ` clipped to [0, 1] for display, titled
    with the target's name and its confidence before → after. The second row
    holds, under each explanation, the heat map of |δ| (mean over channels)
    on a colour scale shared within the block. Axes are laid out row-major:
    `figure.axes[(2 * i + row) * (1 + t) + column]`.

    Args:
        explanation: A `keras_robust.explanations.adversarial.Explanation`.
        path: Optional path of a PNG file to write.
        max_images: Draw at most this many images (the first ones).
        class_names: Optional class names; defaults to the explanation's.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    _check_max_images(max_images)
    _check_explanation(explanation)
    names = class_names if class_names is not None else explanation.class_names
    num_images = min(len(explanation.original), max_images)
    name = _class_namer(names, explanation.targets[:num_images])
    figure, axes = _new_figure(2 * num_images, 1 + explanation.targets.shape[1])
    for i in range(num_images):
        _draw_explanation_block(axes[2 * i], axes[2 * i + 1], explanation, i, name)
    _save(figure, path)
    return figure


def comparison_panel(comparison, path=None, max_images=6, class_names=None):
    """Draws attribution maps before and after an attack beside an explanation.

    One row per image: the clean image, the attacked image (its new class and
    the attack's RMSE), for each attribution method its map on the clean and
    on the attacked image (with their Spearman correlation ρs), then the
    adversarial explanation toward the attacked class, clipped to [0, 1],
    and its |δ| (mean over channels).

    Args:
        comparison: A `keras_robust.explanations.comparison.ExplanationComparison`.
        path: Optional path of a PNG file to write.
        max_images: Draw at most this many images (the first ones).
        class_names: Optional class names; defaults to the explanation's.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    _check_max_images(max_images)
    explanation = comparison.explanation
    _check_explanation(explanation)
    if explanation.targets.shape[1] < 2:
        raise ValueError(
            "The comparison's explanation needs a second target per image (the "
            f"attacked class). Received: targets.shape={explanation.targets.shape}"
        )
    names = class_names if class_names is not None else explanation.class_names
    num_images = min(len(comparison.images), max_images)
    shown_classes = np.stack(
        [comparison.predicted[:num_images], comparison.predicted_attacked[:num_images]], axis=1
    )
    name = _class_namer(names, np.concatenate([shown_classes, explanation.targets[:num_images]], axis=1))
    figure, axes = _new_figure(num_images, 4 + 2 * len(comparison.maps))
    for i, row in enumerate(axes):
        _draw_comparison_row(row, comparison, i, name)
    _save(figure, path)
    return figure


def ara_curve(result, path=None, autoattack=()):
    """Plots accuracy against perturbation size for Attack and BTR ARA.

    Each curve is the fraction of images that still pass its test under
    every perturbation up to RMSE ε (docs/method.md §6): for the attack ARA,
    that the class is still the true one (at ε = 0, the accuracy); for the
    BTR ARA, that the true class's probability is still above 1/K, which
    counts images the network gets wrong but still rates above chance. The
    shaded area above the random-guess line 1/K is the ARA in the legend.

    Args:
        result: A `keras_robust.evaluation.accuracy_robustness.AraResult`.
        path: Optional path of a PNG file to write.
        autoattack: `AutoAttackResult`s in L2 on the same images, drawn as
            points at their ε as an RMSE (ε / sqrt(values per image)).

    Returns:
        The `matplotlib.figure.Figure`.
    """
    if not result.num_classes >= 2:
        raise ValueError(
            f"`result.num_classes` must be >= 2. Received: num_classes={result.num_classes!r}"
        )
    chance = 1.0 / result.num_classes
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    curves = (
        ("attack", "classified correctly (attack ARA {:.4g})", result.attack_ara),
        ("btr", "true-class probability > 1/K (BTR ARA {:.4g})", result.btr_ara),
    )
    for mode, label, area in curves:
        eps, accuracy = result.curve(mode)
        # The histogram's curve starts at the first bin's upper edge; anchor
        # it at ε = 0 so the unperturbed accuracy is visible.
        eps = np.concatenate([[0.0], eps])
        accuracy = np.concatenate([[float(result.robust_accuracy(0.0, mode))], accuracy])
        (line,) = ax.plot(eps, accuracy, label=label.format(area))
        ax.fill_between(
            eps, accuracy, chance, where=accuracy > chance, interpolate=True, color=line.get_color(), alpha=0.25
        )
    l2 = [found for found in autoattack if found.norm == "L2"]
    if l2:
        values = np.prod(l2[0].adversarial_images.shape[1:])
        ax.plot([found.eps / np.sqrt(values) for found in l2], [found.robust_accuracy for found in l2], "kx",
                markersize=8, label="AutoAttack (L2), robust accuracy")
    ax.axhline(chance, color="gray", linestyle="--", label=f"random guess (1/K = {chance:.3g})")
    ax.set_xlabel("perturbation RMSE ε (pixel units, [0, 1] scale)")
    ax.set_ylabel("fraction of images passing")
    ax.set_title("Images still passing under every perturbation up to ε", fontsize=10)
    ax.set_xlim(left=0.0)
    ax.set_ylim(0.0, 1.02)
    ax.legend()
    _save(figure, path)
    return figure


def training_curves(rows, path=None):
    """Plots a run's per-epoch losses, accuracies and ψ.

    Panels: the loss and its parts (total, cross-entropy, regulariser), the
    training accuracies (clean and, with adversarial training, on attacked
    images), and ψ on a log scale when the run is robust.

    Args:
        rows: One dict per epoch with `epoch` (0-based) and the logged metrics,
            as `keras_robust.reporting.run_log.read_log` returns them.
        path: Optional path of a PNG file to write.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    if not rows or any("epoch" not in row for row in rows):
        raise ValueError(f"`rows` must be a non-empty list of dicts with an 'epoch'. Received: rows={rows!r}")
    panels = [
        ("loss", ("loss", "ce", "l_adv"), "linear"),
        ("training accuracy", ("accuracy", "adv_accuracy"), "linear"),
        ("ψ", ("psi",), "log"),
    ]
    panels = [p for p in panels if any(key in row for row in rows for key in p[1])]
    figure = Figure(figsize=(4.2 * len(panels), 3.4), layout="constrained")
    FigureCanvasAgg(figure)
    for ax, (title, keys, scale) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        for key in keys:
            points = [(row["epoch"] + 1, row[key]) for row in rows if key in row]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_yscale(scale)
        ax.legend(fontsize=8)
    _save(figure, path)
    return figure


def _check_max_images(max_images):
    if isinstance(max_images, bool) or not isinstance(max_images, (int, np.integer)) or max_images < 1:
        raise ValueError(f"`max_images` must be an integer >= 1. Received: max_images={max_images!r}")


def _check_explanation(explanation):
    images = np.shape(explanation.images)
    if len(images) != 5 or np.shape(explanation.delta) != images:
        raise ValueError(
            "An explanation's `images` and `delta` must share a shape (n, t, H, W, C). "
            f"Received: images.shape={images}, delta.shape={np.shape(explanation.delta)}"
        )
    for field in ("targets", "confidence_before", "confidence_after"):
        if np.shape(getattr(explanation, field)) != images[:2]:
            raise ValueError(
                f"An explanation's `{field}` must have shape {images[:2]}. "
                f"Received: {field}.shape={np.shape(getattr(explanation, field))}"
            )
    if np.shape(explanation.original) != images[:1] + images[2:]:
        raise ValueError(
            f"An explanation's `original` must have shape {images[:1] + images[2:]}. "
            f"Received: original.shape={np.shape(explanation.original)}"
        )


def _class_namer(class_names, classes):
    """A function from class index to label; checks `class_names` covers `classes`."""
    if class_names is None:
        return lambda k: str(int(k))
    largest = int(np.max(classes)) if np.size(classes) else -1
    if largest >= len(class_names):
        raise ValueError(
            f"`class_names` must name every class shown, up to class {largest}. "
            f"Received: {len(class_names)} class names"
        )
    return lambda k: str(class_names[int(k)])


def _draw_explanation_block(image_row, heat_row, explanation, i, name):
    """Image `i` and its explanations above the |δ| heat maps, on one scale."""
    _show_image(image_row[0], explanation.original[i])
    image_row[0].set_title(
        _input_title(explanation.targets[i], explanation.confidence_before[i], name), fontsize=TITLE_SIZE
    )
    heat = np.abs(explanation.delta[i]).mean(axis=-1)
    heat_row[0].axis("off")
    heat_row[0].text(
        0.5,
        0.5,
        f"|δ|, mean over\nchannels\nscale 0–{heat.max():.3g}",
        ha="center",
        va="center",
        fontsize=NOTE_SIZE,
        transform=heat_row[0].transAxes,
    )
    for j in range(explanation.targets.shape[1]):
        _show_image(image_row[1 + j], explanation.images[i, j])
        _set_target_title(image_row[1 + j], "", explanation, i, j, name)
        _show_heat(heat_row[1 + j], heat[j], _positive(heat.max()))
        heat_row[1 + j].set_xlabel(f"max {heat[j].max():.3g}", fontsize=NOTE_SIZE)


def _draw_comparison_row(row, comparison, i, name):
    """Image `i`: clean and attacked inputs, each method's maps, then the AE."""
    _show_image(row[0], comparison.images[i])
    row[0].set_title(f"clean\n{name(comparison.predicted[i])}", fontsize=TITLE_SIZE)
    _show_image(row[1], comparison.attacked_images[i])
    row[1].set_title(
        f"attacked: {name(comparison.predicted_attacked[i])}\nRMSE {comparison.attack_rmse[i]:.3g}",
        fontsize=TITLE_SIZE,
    )
    for k, (method, (clean, after)) in enumerate(comparison.maps.items()):
        rho = comparison.rank_correlation[method][i]
        # Attribution maps have arbitrary units, so each gets its own scale.
        _show_heat(row[2 + 2 * k], clean[i], _positive(clean[i].max()), cmap="viridis")
        row[2 + 2 * k].set_title(f"{method}\nclean", fontsize=TITLE_SIZE)
        _show_heat(row[3 + 2 * k], after[i], _positive(after[i].max()), cmap="viridis")
        row[3 + 2 * k].set_title(f"{method}\nattacked ρs={rho:.2f}", fontsize=TITLE_SIZE)
    explanation = comparison.explanation
    _show_image(row[-2], explanation.images[i, 1])
    _set_target_title(row[-2], "AE → ", explanation, i, 1, name)
    heat = np.abs(explanation.delta[i, 1]).mean(axis=-1)
    _show_heat(row[-1], heat, _positive(heat.max()))
    row[-1].set_title(f"|δ|\nmax {heat.max():.3g}", fontsize=TITLE_SIZE)


def _set_target_title(axis, prefix, explanation, i, j, name):
    """The target and its confidence before → after; in red and marked when δ fell short of the sanity check."""
    before, after = explanation.confidence_before[i, j], explanation.confidence_after[i, j]
    title = f"{prefix}{name(explanation.targets[i, j])}\np {before:.2f}→{after:.2f}"
    short = explanation.outcome is not None and explanation.outcome[i, j] != "reached"
    marked = {"color": SHORT_COLOR} if short else {}
    axis.set_title(title + ("\nshort of ρ" if short else ""), fontsize=TITLE_SIZE, **marked)


def _input_title(targets, confidence, name):
    """The input's title, with the predicted class when the confidences prove it.

    The targets' confidences only cover some classes; the best of them is the
    prediction when no unseen class could beat it, i.e. when it exceeds the
    probability mass left over for all unseen classes together.
    """
    _, first = np.unique(targets, return_index=True)
    seen = confidence[first]
    best = int(np.argmax(seen))
    if seen[best] > 1.0 - seen.sum():
        return f"input\npredicted {name(targets[first[best]])}"
    return "input"


def _new_figure(rows, columns):
    figure = Figure(figsize=(CELL_WIDTH * columns, CELL_HEIGHT * rows), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, columns, squeeze=False)


def _show_image(ax, image):
    # Explanations x + δ may leave [0, 1]; the reference clamps for display.
    image = np.clip(np.asarray(image, dtype="float32"), 0.0, 1.0)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(image)
    _no_ticks(ax)


def _show_heat(ax, heat, vmax, cmap="inferno"):
    ax.imshow(heat, cmap=cmap, vmin=0.0, vmax=vmax)
    _no_ticks(ax)


def _no_ticks(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def _positive(value):
    # An all-zero map would give an empty colour range; any positive top works.
    return float(value) if value > 0 else 1.0


def _save(figure, path):
    if path is not None:
        with atomic_path(path) as partial:
            figure.savefig(partial, format="png", dpi=DPI, bbox_inches="tight")
