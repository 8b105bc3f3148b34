"""Sentences that state results, written from the figures they describe.

A report's text about what was measured is generated here from the numbers
in the same report, so that it says the opposite when the numbers say the
opposite; fixed text in the reports only describes the method.

Example:

>>> summary = {"class_changed": 1.0, "explanations_within_budget_check": 1.0,
...            "mean_attack_rmse": 0.004, "rank_correlation_saliency": 0.9}
>>> comparison_findings("N1", summary)
'On N1 the class changed on 100% of the images, with a mean perturbation RMSE of 0.004. 100% of its explanations toward the new class reached their budget ρ by half their steps. The saliency maps barely move (mean ρs 0.90): they do not follow the change of class.'
"""

import numpy as np

from keras_robust.models.zoo.catalog import CATALOG

# Mean Spearman rank correlation between an attribution map before and after a
# class-changing perturbation: at or above STILL the map barely moved, at or
# below MOVED it changed substantially (claim 1 of docs/method.md §1; docs/explanations.md).
STILL = 0.7
MOVED = 0.4
METHOD_TITLES = {"saliency": "saliency", "smoothgrad": "SmoothGrad", "integrated_gradients": "integrated gradients",
                 "grad_cam": "Grad-CAM"}
RANK_PREFIX = "rank_correlation_"


def network_label(name):
    """`"N3 (resnet44-cifar10-all)"` for a shipped network, the name itself for any other."""
    entry = CATALOG.get(name)
    return f"{entry['paper_name']} ({name})" if entry else name


def comparison_row(network, summary):
    """A `compare_explanations` summary as a report's table row, with column titles a reader knows."""
    row = {"network": network, "class changed": _percent(summary["class_changed"]),
           "mean perturbation RMSE": summary["mean_attack_rmse"]}
    for method, value in _rank_correlations(summary).items():
        row[f"ρs {_title(method)}"] = value
    row["explanations at budget by step N/2"] = _percent(summary["explanations_within_budget_check"])
    return row


def comparison_findings(network, summary):
    """What one network's claim-1 comparison found, in sentences."""
    sentences = [f"On {network} the class changed on {_percent(summary['class_changed'])} of the images, with a "
                 f"mean perturbation RMSE of {summary['mean_attack_rmse']:.3g}.",
                 f"{_percent(summary['explanations_within_budget_check'])} of its explanations toward the new class "
                 "reached their budget ρ by half their steps"
                 + ("." if summary["explanations_within_budget_check"] == 1 else
                    "; the others are weaker than asked (titled in red, “short of ρ”).")]
    for method, value in _rank_correlations(summary).items():
        if value >= STILL:
            verdict = "barely move (mean ρs {:.2f}): they do not follow the change of class."
        elif value <= MOVED:
            verdict = "change substantially (mean ρs {:.2f}): they follow the change of class."
        else:
            verdict = "change partly (mean ρs {:.2f})."
        sentences.append(f"The {_title(method)} maps " + verdict.format(value))
    return " ".join(sentences)


def robust_versus_standard(robust, standard, summaries):
    """How the robust network's comparison differs from the standard one's, in sentences.

    Args:
        robust, standard: The two networks' names in the report.
        summaries: `{name: compare_explanations summary}` for both.
    """
    ours, theirs = summaries[robust], summaries[standard]
    ratio = ours["mean_attack_rmse"] / max(theirs["mean_attack_rmse"], 1e-12)
    sentences = [f"Changing {robust}'s answer took {ratio:.2g}× the perturbation {standard}'s needed (mean RMSE "
                 f"{ours['mean_attack_rmse']:.3g} vs {theirs['mean_attack_rmse']:.3g}): a robust network should "
                 + ("need more, and does." if ratio > 1 else "need more, and here does not.")]
    for method, value in _rank_correlations(ours).items():
        other = theirs[RANK_PREFIX + method]
        moved = "moved more" if value < other else "moved less"
        sentences.append(f"The {_title(method)} maps {moved} on {robust} than on {standard} (mean ρs {value:.2f} vs "
                         f"{other:.2f}).")
    return " ".join(sentences)


# Why explanations fell short of the sanity check, by `Explanation.outcome`, as a report says it.
SHORT_REASONS = {
    "late": "reached it only later",
    "held": "are toward a class the network already gives at p ≈ 1.000, where its gradient vanishes (nothing to "
            "explain)",
    "vanishing": "have an input gradient too small for the attack to follow",
    "short": "never reached it: the network's gradient keeps turning, as a non-robust network's does",
}


def outcome_findings(explanation, steps):
    """What the explanations did, counted from their outcome fields (`Explanation.target_is_top`,
    `outcome`): how many make the target the top class and how many reached their budget in time."""
    total = explanation.outcome.size
    top = int(np.sum(explanation.target_is_top))
    reached = int(np.sum(explanation.outcome == "reached"))
    sentences = [f"{top} of {total} explanations make the target the top class on x + δ."]
    if top < total:
        sentences.append("On the others the network still gives another class: they show a push toward the "
                         "target, not what makes the network give it.")
    sentences.append(f"{reached} of {total} reached their budget ρ by step {steps // 2} of {steps}, as the sanity "
                     "check of docs/method.md §4 asks.")
    if reached < total:
        reasons = [f"{int(np.sum(explanation.outcome == kind))} {text}" for kind, text in SHORT_REASONS.items()
                   if np.any(explanation.outcome == kind)]
        sentences.append(f"Of the others, {'; '.join(reasons)}. Their pictures are marked “short of ρ”.")
    return " ".join(sentences)


def relative_total_variation(delta):
    """Mean |difference| between neighbouring pixels of each δ over its mean |δ|.

    Near 1.4 for pixel noise, far below for shapes and colour areas, so it
    says whether explanations look like noise without a person looking.
    """
    delta = np.asarray(delta, "float64").reshape((-1,) + np.shape(delta)[-3:])
    steps = np.abs(np.diff(delta, axis=1)).mean(axis=(1, 2, 3)) + np.abs(np.diff(delta, axis=2)).mean(axis=(1, 2, 3))
    return float(np.mean(steps / 2 / np.maximum(np.abs(delta).mean(axis=(1, 2, 3)), 1e-12)))


def smoothness_findings(variations, confidences, what):
    """Which network's explanations look least like noise, from `relative_total_variation`.

    Args:
        variations: `{network: relative total variation of its explanations' δ}`.
        confidences: `{network: mean confidence of the targets after}`.
        what: What the explanations are, for the sentences ("prototypes").
    """
    sentences = [f"{name}: mean target confidence {confidences[name]:.2f}, relative total variation of δ "
                 f"{value:.2f}." for name, value in variations.items()]
    smoothest = min(variations, key=variations.get)
    noisiest = max(variations, key=variations.get)
    if smoothest != noisiest:
        sentences.append(f"{smoothest}'s {what} vary {variations[noisiest] / variations[smoothest]:.2g}× less "
                         f"from pixel to pixel than {noisiest}'s.")
    return "\n\n".join(sentences)


# AutoAttack this many points or more below the paper's attack at one ε is called out: the paper's
# attack then overstates the network's robustness.
OVERSTATED_POINTS = 5.0


def autoattack_findings(robust, norm):
    """Sentences comparing AutoAttack's robust accuracy with the L2,min attack's at each ε of `robust`
    (the `evaluate` summary's `autoattack_<norm>_<ε>` and `robust_accuracy_l2_<ε>` entries)."""
    sentences = []
    prefix = f"autoattack_{norm.lower()}_"
    for key, value in robust.items():
        if not key.startswith(prefix):
            continue
        eps = key[len(prefix):]
        paper = robust.get(f"robust_accuracy_l2_{eps}") if norm == "L2" else None
        sentence = f"AutoAttack ({norm}, ε = {eps}): robust accuracy {_percent(value)}"
        if paper is None:
            sentences.append(sentence + ".")
            continue
        gap = 100 * (paper - value)
        sentences.append(sentence + f", against {_percent(paper)} under the paper's L2,min attack" + (
            f": AutoAttack finds {gap:.1f} points less, so the paper's attack overstates this network's "
            "robustness at this ε." if gap >= OVERSTATED_POINTS else "."))
    return sentences


def _rank_correlations(summary):
    return {key[len(RANK_PREFIX):]: value for key, value in summary.items() if key.startswith(RANK_PREFIX)}


def _title(method):
    return METHOD_TITLES.get(method, method)


def _percent(fraction):
    return f"{100 * fraction:.0f}%"
