"""Tests for `keras_robust.reporting.plots`, on hand-made results (no model needed)."""

import dataclasses

import matplotlib
import numpy as np
import pytest
from PIL import Image

from keras_robust.evaluation.accuracy_robustness import AraResult, accuracy_robustness_area
from keras_robust.explanations.adversarial import Explanation
from keras_robust.explanations.comparison import ExplanationComparison
from keras_robust.reporting import plots

CLASS_NAMES = ("cat", "dog", "ship", "frog")


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def make_explanation(rng, num_images=2, extra_targets=True, size=8, channels=3, class_names=CLASS_NAMES):
    """Targets as in docs/method.md §5: predicted class, runner-up, then (optionally) every class."""
    num_classes = len(CLASS_NAMES)
    original = rng.uniform(0.0, 1.0, (num_images, size, size, channels)).astype("float32")
    probabilities = _softmax(rng.normal(0.0, 2.0, (num_images, num_classes)))
    order = np.argsort(-probabilities, axis=1)
    targets = order[:, :2]
    if extra_targets:
        targets = np.concatenate([targets, np.tile(np.arange(num_classes), (num_images, 1))], axis=1)
    num_targets = targets.shape[1]
    # Large enough that x + δ leaves [0, 1], which the display must clip.
    delta = rng.normal(0.0, 0.5, (num_images, num_targets, size, size, channels)).astype("float32")
    return Explanation(
        images=original[:, None] + delta,
        delta=delta,
        targets=targets,
        confidence_before=np.take_along_axis(probabilities, targets, axis=1),
        confidence_after=rng.uniform(0.5, 1.0, (num_images, num_targets)),
        original=original,
        class_names=class_names,
    )


def make_comparison(rng, num_images=3, methods=("saliency", "grad_cam")):
    explanation = make_explanation(rng, num_images, extra_targets=False)
    images = explanation.original
    maps = {m: (rng.uniform(size=images.shape[:3]), rng.uniform(size=images.shape[:3])) for m in methods}
    return ExplanationComparison(
        images=images,
        attacked_images=np.clip(images + rng.normal(0.0, 0.02, images.shape), 0.0, 1.0),
        attack_rmse=rng.uniform(0.005, 0.02, num_images),
        predicted=explanation.targets[:, 0],
        predicted_attacked=explanation.targets[:, 1],
        maps=maps,
        rank_correlation={m: np.linspace(0.93, 0.11, num_images) for m in methods},
        explanation=explanation,
    )


def make_ara_result(rng, num_classes=10):
    attack = rng.exponential(0.01, 200)
    btr = attack * 2.5 + 0.001
    attack[:20] = 0.0  # misclassified from the start
    return AraResult(
        attack_ara=accuracy_robustness_area(attack, num_classes),
        btr_ara=accuracy_robustness_area(btr, num_classes),
        attack_min_rmse=attack,
        btr_min_rmse=btr,
        num_classes=num_classes,
        clean_accuracy=0.9,
    )


def read_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_plots_leave_the_global_backend_alone(rng, tmp_path):
    previous = matplotlib.get_backend()
    # A user's choice that is not Agg, so a switch to Agg would show.
    matplotlib.use("svg")
    try:
        plots.ara_curve(make_ara_result(rng), tmp_path / "ara.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(previous)
    read_png(tmp_path / "ara.png")


def test_explanation_grid_png_grows_with_targets(rng, tmp_path):
    few = make_explanation(rng, extra_targets=False)
    many = make_explanation(rng, extra_targets=True)
    plots.explanation_grid(few, tmp_path / "few.png")
    plots.explanation_grid(many, tmp_path / "many.png")
    few_width, few_height = read_png(tmp_path / "few.png")
    many_width, many_height = read_png(tmp_path / "many.png")
    assert 150 < few_width < many_width < 2000
    assert 200 < few_height < 1000
    assert abs(many_height - few_height) < 0.2 * few_height


def test_explanation_grid_titles_name_classes_and_confidences(rng):
    explanation = make_explanation(rng)
    figure = plots.explanation_grid(explanation)
    columns = 1 + explanation.targets.shape[1]
    for i in range(2):
        predicted = CLASS_NAMES[explanation.targets[i, int(np.argmax(explanation.confidence_before[i]))]]
        assert figure.axes[2 * i * columns].get_title() == f"input\npredicted {predicted}"
        for j in range(explanation.targets.shape[1]):
            title = figure.axes[2 * i * columns + 1 + j].get_title()
            before, after = explanation.confidence_before[i, j], explanation.confidence_after[i, j]
            assert title.startswith(CLASS_NAMES[explanation.targets[i, j]] + "\n")
            assert f"p {before:.2f}→{after:.2f}" in title


def test_explanation_grid_marks_explanations_short_of_their_budget_in_red(rng):
    import dataclasses

    import matplotlib.colors

    explanation = make_explanation(rng, num_images=1, extra_targets=False)
    explanation = dataclasses.replace(explanation, outcome=np.array([["reached", "held"]]))
    figure = plots.explanation_grid(explanation)
    reached, held = (figure.axes[1 + j].title for j in range(2))
    assert "short of ρ" not in reached.get_text() and held.get_text().endswith("\nshort of ρ")
    assert matplotlib.colors.to_hex(held.get_color()) == plots.SHORT_COLOR
    assert matplotlib.colors.to_hex(reached.get_color()) != plots.SHORT_COLOR


def test_explanation_grid_class_names_argument_and_default_indices(rng):
    explanation = make_explanation(rng, extra_targets=False, class_names=None)
    target = explanation.targets[0, 0]
    assert plots.explanation_grid(explanation).axes[1].get_title().startswith(f"{target}\n")
    renamed = plots.explanation_grid(explanation, class_names=("A", "B", "C", "D"))
    assert renamed.axes[1].get_title().startswith("ABCD"[target] + "\n")


def test_explanation_grid_omits_unproven_prediction(rng):
    explanation = make_explanation(rng, extra_targets=False)
    # Two targets holding 0.3 of the mass cannot rule out an unseen class.
    low = np.array([[0.2, 0.1]] * 2)
    figure = plots.explanation_grid(
        dataclasses.replace(explanation, confidence_before=low)
    )
    assert figure.axes[0].get_title() == "input"


def test_explanation_grid_clips_displayed_explanations(rng):
    explanation = make_explanation(rng)
    assert explanation.images.min() < 0.0 and explanation.images.max() > 1.0
    figure = plots.explanation_grid(explanation)
    shown = np.asarray(figure.axes[1].images[0].get_array())
    np.testing.assert_allclose(shown, np.clip(explanation.images[0, 0], 0.0, 1.0), atol=1e-6)
    for ax in figure.axes:
        for image in ax.images:
            if image.get_array().ndim == 3:
                assert 0.0 <= image.get_array().min() and image.get_array().max() <= 1.0
        if ax.axison:  # the blank cell under each input has no axis at all
            assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []


def test_explanation_grid_heat_maps_share_a_scale_per_image(rng):
    explanation = make_explanation(rng)
    figure = plots.explanation_grid(explanation)
    columns = 1 + explanation.targets.shape[1]
    for i in range(2):
        heat_axes = figure.axes[(2 * i + 1) * columns + 1 : (2 * i + 2) * columns]
        expected = np.abs(explanation.delta[i]).mean(axis=-1)
        assert all(ax.images[0].norm.vmax == pytest.approx(expected.max()) for ax in heat_axes)
        np.testing.assert_allclose(heat_axes[0].images[0].get_array(), expected[0], rtol=1e-6)
        assert heat_axes[0].images[0].get_cmap().name == "inferno"
        assert f"max {expected[0].max():.3g}" == heat_axes[0].get_xlabel()


def test_explanation_grid_max_images_and_grayscale(rng):
    explanation = make_explanation(rng, num_images=3, extra_targets=False, channels=1)
    figure = plots.explanation_grid(explanation, max_images=2)
    assert len(figure.axes) == 2 * 2 * 3
    assert figure.axes[1].images[0].get_array().shape == (8, 8)


def test_explanation_grid_rejects_bad_arguments(rng):
    explanation = make_explanation(rng)
    with pytest.raises(ValueError, match="Received: max_images=0$"):
        plots.explanation_grid(explanation, max_images=0)
    with pytest.raises(ValueError, match="Received: max_images=2.0"):
        plots.explanation_grid(explanation, max_images=2.0)
    with pytest.raises(ValueError, match="Received: 2 class names"):
        plots.explanation_grid(explanation, class_names=("cat", "dog"))
    broken = dataclasses.replace(explanation, targets=explanation.targets[:, :1])
    with pytest.raises(ValueError, match="Received: targets.shape=\\(2, 1\\)"):
        plots.explanation_grid(broken)


def test_comparison_panel_layout_titles_and_png(rng, tmp_path):
    comparison = make_comparison(rng)
    figure = plots.comparison_panel(comparison, tmp_path / "panel.png", max_images=2)
    width, height = read_png(tmp_path / "panel.png")
    assert width > height > 150
    columns = 4 + 2 * 2
    assert len(figure.axes) == 2 * columns
    names = [CLASS_NAMES[k] for k in comparison.explanation.targets[0]]
    titles = [ax.get_title() for ax in figure.axes[:columns]]
    assert titles[0] == f"clean\n{names[0]}"
    assert titles[1] == f"attacked: {names[1]}\nRMSE {comparison.attack_rmse[0]:.3g}"
    assert titles[2] == "saliency\nclean" and titles[3] == "saliency\nattacked ρs=0.93"
    assert titles[5] == "grad_cam\nattacked ρs=0.93"
    assert figure.axes[columns + 3].get_title() == "saliency\nattacked ρs=0.52"
    assert titles[6].startswith(f"AE → {names[1]}\np ")
    shown = figure.axes[6].images[0].get_array()
    np.testing.assert_allclose(shown, np.clip(comparison.explanation.images[0, 1], 0.0, 1.0), atol=1e-6)
    np.testing.assert_allclose(
        figure.axes[7].images[0].get_array(), np.abs(comparison.explanation.delta[0, 1]).mean(axis=-1), rtol=1e-6
    )


def test_comparison_panel_rejects_bad_arguments(rng):
    comparison = make_comparison(rng)
    with pytest.raises(ValueError, match="Received: max_images=0$"):
        plots.comparison_panel(comparison, max_images=0)
    one_target = make_explanation(rng, num_images=3, extra_targets=False)
    fields = ("images", "delta", "targets", "confidence_before", "confidence_after")
    one_target = dataclasses.replace(one_target, **{k: getattr(one_target, k)[:, :1] for k in fields})
    with pytest.raises(ValueError, match="Received: targets.shape=\\(3, 1\\)"):
        plots.comparison_panel(dataclasses.replace(comparison, explanation=one_target))


def test_ara_curve_legend_chance_line_and_shading(rng, tmp_path):
    result = make_ara_result(rng)
    result = dataclasses.replace(result, attack_ara=0.014237, btr_ara=0.0395)
    figure = plots.ara_curve(result, tmp_path / "ara.png")
    width, height = read_png(tmp_path / "ara.png")
    assert 400 < width < 900 and 300 < height < 600
    ax = figure.axes[0]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "classified correctly (attack ARA 0.01424)" in legend
    assert "true-class probability > 1/K (BTR ARA 0.0395)" in legend
    chance_lines = [line for line in ax.get_lines() if set(np.asarray(line.get_ydata(), float)) == {0.1}]
    assert len(chance_lines) == 1 and chance_lines[0].get_linestyle() == "--"
    assert ax.get_xlabel() == "perturbation RMSE ε (pixel units, [0, 1] scale)"
    assert ax.get_ylabel() == "fraction of images passing"
    assert len(ax.collections) == 2


def test_ara_curve_plots_the_result_curves_from_zero(rng):
    result = make_ara_result(rng)
    ax = plots.ara_curve(result).axes[0]
    attack, btr = ax.get_lines()[:2]
    eps, accuracy = result.curve("attack")
    np.testing.assert_allclose(attack.get_xdata()[1:], eps)
    np.testing.assert_allclose(attack.get_ydata()[1:], accuracy)
    assert attack.get_xdata()[0] == 0.0 and attack.get_ydata()[0] == pytest.approx(0.9)
    assert btr.get_ydata()[0] == 1.0


def test_ara_curve_rejects_bad_num_classes(rng):
    result = dataclasses.replace(make_ara_result(rng), num_classes=1)
    with pytest.raises(ValueError, match="Received: num_classes=1"):
        plots.ara_curve(result)


def test_training_curves_show_psi_only_for_robust_runs(tmp_path):
    standard = [{"epoch": e, "loss": 2.0 - e / 10, "accuracy": 0.3 + e / 20} for e in range(3)]
    figure = plots.training_curves(standard, tmp_path / "standard.png")
    assert [ax.get_title() for ax in figure.axes] == ["loss", "training accuracy"]
    robust = [dict(row, ce=row["loss"] - 0.1, l_adv=0.1, psi=220.0 * (e + 1)) for e, row in enumerate(standard)]
    figure = plots.training_curves(robust)
    assert [ax.get_title() for ax in figure.axes] == ["loss", "training accuracy", "ψ"]
    assert figure.axes[2].get_yscale() == "log"
    x, y = figure.axes[2].get_lines()[0].get_data()
    assert list(x) == [1, 2, 3] and list(y) == [220.0, 440.0, 660.0]
    with pytest.raises(ValueError, match="non-empty list of dicts"):
        plots.training_curves([])
