"""Report sentences follow their figures: contrary figures give contrary sentences."""

import types

import numpy as np
import pytest

from keras_robust.reporting import findings


def summary(rmse, saliency, grad_cam, changed=1.0, within=1.0):
    return {"class_changed": changed, "explanations_within_budget_check": within, "mean_attack_rmse": rmse,
            "rank_correlation_saliency": saliency, "rank_correlation_grad_cam": grad_cam}


@pytest.mark.parametrize("value, verdict", [(0.92, "barely move (mean ρs 0.92): they do not follow"),
                                            (0.55, "change partly (mean ρs 0.55)"),
                                            (0.11, "change substantially (mean ρs 0.11): they follow")])
def test_comparison_findings_say_what_the_rank_correlation_says(value, verdict):
    text = findings.comparison_findings("N1", summary(0.0042, value, value, changed=0.75))
    assert text.startswith("On N1 the class changed on 75% of the images, with a mean perturbation RMSE of 0.0042.")
    assert f"The saliency maps {verdict}" in text and f"The Grad-CAM maps {verdict}" in text


def test_robust_versus_standard_states_the_contrary_of_contrary_figures():
    as_in_the_paper = {"N3": summary(0.0193, 0.37, 0.11), "N1": summary(0.0042, 0.48, 0.50)}
    text = findings.robust_versus_standard("N3", "N1", as_in_the_paper)
    assert ("Changing N3's answer took 4.6× the perturbation N1's needed (mean RMSE 0.0193 vs 0.0042): "
            "a robust network should need more, and does.") in text
    assert "The Grad-CAM maps moved more on N3 than on N1 (mean ρs 0.11 vs 0.50)." in text
    contrary = {"N3": summary(0.0021, 0.90, 0.80), "N1": summary(0.0042, 0.48, 0.50)}
    text = findings.robust_versus_standard("N3", "N1", contrary)
    assert "took 0.5× the perturbation N1's needed (mean RMSE 0.0021 vs 0.0042): a robust network should need " \
           "more, and here does not." in text
    assert "The saliency maps moved less on N3 than on N1 (mean ρs 0.90 vs 0.48)." in text


def test_comparison_row_has_titles_a_reader_knows():
    row = findings.comparison_row("N1 (resnet44-cifar10-standard)", summary(0.0042, 0.48, 0.5, within=0.25))
    assert list(row) == ["network", "class changed", "mean perturbation RMSE", "ρs saliency", "ρs Grad-CAM",
                         "explanations at budget by step N/2"]
    assert row["class changed"] == "100%" and row["explanations at budget by step N/2"] == "25%"


def test_network_labels_name_the_paper_network():
    assert findings.network_label("resnet44-cifar10-all") == "N3 (resnet44-cifar10-all)"
    assert findings.network_label("resnet44-cifar10-robust") == "N4 (resnet44-cifar10-robust)"
    assert findings.network_label("runs/mine/model.keras") == "runs/mine/model.keras"


def test_relative_total_variation_by_hand():
    # iid Gaussian noise: E|x - y| / E|x| = (2σ/√π) / (σ√(2/π)) = √2.
    noise = np.random.default_rng(0).normal(size=(4, 64, 64, 3))
    assert findings.relative_total_variation(noise) == pytest.approx(np.sqrt(2), rel=0.01)
    # A ±1 checkerboard: every neighbour differs by 2 and mean |δ| is 1.
    checkerboard = np.where((np.arange(8)[:, None] + np.arange(8)) % 2, 1.0, -1.0)[None, :, :, None]
    assert findings.relative_total_variation(checkerboard) == pytest.approx(2.0)
    # A constant area changes nowhere.
    assert findings.relative_total_variation(np.full((1, 8, 8, 3), 0.3)) == 0.0


def test_smoothness_findings_name_the_smoother_network_whichever_it_is():
    confidences = {"N1": 0.9, "N3": 0.8}
    text = findings.smoothness_findings({"N1": 1.2, "N3": 0.3}, confidences, "prototypes")
    assert "N3's prototypes vary 4× less from pixel to pixel than N1's." in text
    text = findings.smoothness_findings({"N1": 0.3, "N3": 1.2}, confidences, "prototypes")
    assert "N1's prototypes vary 4× less from pixel to pixel than N3's." in text
    assert "N3: mean target confidence 0.80, relative total variation of δ 1.20." in text


def _explained(outcome, target_is_top):
    return types.SimpleNamespace(outcome=np.array(outcome), target_is_top=np.array(target_is_top))


def test_outcome_findings_are_counted_from_the_outcome_fields():
    good = findings.outcome_findings(_explained([["reached", "reached"]], [[True, True]]), 10)
    assert good == ("2 of 2 explanations make the target the top class on x + δ. 2 of 2 reached their budget ρ by "
                    "step 5 of 10, as the sanity check of docs/method.md §4 asks.")
    mixed = findings.outcome_findings(
        _explained([["reached", "held", "late"], ["short", "short", "vanishing"]],
                   [[True, True, False], [False, False, False]]), 35)
    assert mixed.startswith("2 of 6 explanations make the target the top class on x + δ. On the others the network "
                            "still gives another class")
    assert ("1 of 6 reached their budget ρ by step 17 of 35, as the sanity check of docs/method.md §4 asks. Of the "
            "others, 1 reached it only later; 1 are toward a class the network already gives at p ≈ 1.000") in mixed
    assert "; 1 have an input gradient too small for the attack to follow; 2 never reached it" in mixed
    assert mixed.endswith("Their pictures are marked “short of ρ”.")


def test_comparison_findings_say_how_many_explanations_reached_their_budget():
    text = findings.comparison_findings("N1", summary(0.004, 0.9, 0.9, within=0.25))
    assert ("25% of its explanations toward the new class reached their budget ρ by half their steps; the others are "
            "weaker than asked") in text
    text = findings.comparison_findings("N3", summary(0.004, 0.9, 0.9, within=1.0))
    assert "100% of its explanations toward the new class reached their budget ρ by half their steps." in text


def test_autoattack_findings_say_when_the_papers_attack_overstates_robustness():
    robust = {"robust_accuracy_l2_0.5": 0.60, "autoattack_l2_0.5": 0.52, "robust_accuracy_l2_1": 0.30,
              "autoattack_l2_1": 0.28, "clean_accuracy": 0.9}
    assert findings.autoattack_findings(robust, "L2") == [
        "AutoAttack (L2, ε = 0.5): robust accuracy 52%, against 60% under the paper's L2,min attack: AutoAttack "
        "finds 8.0 points less, so the paper's attack overstates this network's robustness at this ε.",
        "AutoAttack (L2, ε = 1): robust accuracy 28%, against 30% under the paper's L2,min attack.",
    ]
    assert findings.autoattack_findings({"autoattack_linf_0.0313725": 0.4}, "Linf") == [
        "AutoAttack (Linf, ε = 0.0313725): robust accuracy 40%."]
