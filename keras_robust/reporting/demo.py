"""`keras-robust demo`: the paper's networks explaining photos, offline.

One call loads two of the shipped networks (a robust one, N3 by default, and
the standard N1), explains a few images with adversarial explanations, draws
each class's prototype, puts Grad-CAM and saliency beside the adversarial
explanation under a small class-changing attack (claim 1 of the paper), and
writes everything into one self-contained HTML report.

Example:

>>> from keras_robust.reporting.demo import run_demo, sample_images
>>> images, names, skipped = sample_images()
>>> run_demo(images, names, out_dir="demo")
'demo/report.html'
"""

import os
import time
import warnings

import numpy as np

from keras_robust.common.defaults import EXPLAIN_STEPS, SMALLEST_CHANGE_STEPS
from keras_robust.data.image_files import load_readable_images
from keras_robust.explanations.adversarial import AdversarialExplainer
from keras_robust.explanations.comparison import compare_explanations
from keras_robust.explanations.outcome import ExplanationOutcomeWarning
from keras_robust.method.model_calls import predict_logits
from keras_robust.models.zoo import pretrained, pretrained_card, pretrained_names
from keras_robust.models.zoo.catalog import DEMO_MODEL, STANDARD_MODEL
from keras_robust.reporting import findings, plots, report

SAMPLE_IMAGES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_images")
PROTOTYPE_GREY = 0.5
COMPARISON_METHODS = ("saliency", "grad_cam")

INTRODUCTION = """\
Adversarial explanations (Woods, Chen & Teuscher, Nature Machine Intelligence 2019) explain a \
decision by asking the network itself: "what is the smallest change that makes you call this \
image class c?". The change δ is found by the same attack that measures robustness, aimed at c. \
Where the network then gives c on x + δ, δ is what it needed to see, in its own terms; each \
section below counts how many explanations got there, and marks those that did not.

The paper finds that on a standard network δ is imperceptible noise (the network can be talked \
into any class without the picture changing for a human), while on a robust network δ has to \
change what the picture shows, so x + δ shows what the network needs to see to call it c. The \
sections below measure both networks on these images."""

RESIZED_NOTE = """\
The networks take 32×32 images; the images are resized to 32×32, and the first column shows \
what the network sees."""

# Only for the photos shipped with the package, which are described here.
SHIPPED_PHOTOS_NOTE = RESIZED_NOTE + """ These photos are unlike CIFAR-10 (close-ups, a silhouette, \
an object of no CIFAR-10 class), so a robust network may rightly be unsure of them; the explanation \
toward each class shows what would make it sure."""

TEST_IMAGES_NOTE = "CIFAR-10 test images, with their true labels: the first target is the true class."

PROTOTYPES_NOTE = """\
Each picture is the explanation toward one class, starting from a flat grey image: the \
perturbation the network needs before it sees that class in nothing at all. The relative total \
variation of δ (mean difference between neighbouring pixels over mean |δ|) is about 1.4 for \
pixel noise and far lower for areas and shapes."""

COMPARISON_NOTE = """\
Per image: the clean image, the smallest perturbation found that changes the network's answer \
(its RMSE in [0, 1] pixel units), saliency and Grad-CAM maps before and after it with their \
Spearman rank correlation ρs, and the adversarial explanation toward the new class with its |δ|. \
A map that barely moves (ρs near 1) while the class has changed does not show what the decision \
rests on (the paper's claim 1)."""


def sample_images(size=(32, 32)):
    """The photos shipped for the demo, resized to `size`: `(images, names, skipped)`."""
    paths = sorted(
        os.path.join(SAMPLE_IMAGES_DIR, name)
        for name in os.listdir(SAMPLE_IMAGES_DIR)
        if name.endswith(".png")
    )
    return load_readable_images(paths, size)


def run_demo(images, image_names, out_dir="demo", model=DEMO_MODEL, labels=None, steps=EXPLAIN_STEPS,
             attack_steps=SMALLEST_CHANGE_STEPS, all_networks=False, log=print, images_note=RESIZED_NOTE):
    """Explains `images` with a shipped robust network and the standard one.

    Args:
        images: Float images `(n, 32, 32, 3)` in [0, 1].
        image_names: A name per image, for the report.
        out_dir: Folder for `report.html` and its PNG pictures.
        model: The network whose explanations lead the report (one of
            `pretrained_names()`); N1 is always loaded for the comparison.
        labels: True labels, if known (test images); else each network's
            own prediction is explained first.
        steps: Explanation steps N (35).
        attack_steps: Steps of the smallest class-changing attack (200).
        all_networks: Also explain the images with all four shipped
            networks side by side (the paper's Figure 4).
        log: Called with one line per stage, for progress.
        images_note: What the report says of the images (`SHIPPED_PHOTOS_NOTE`
            only for `sample_images()`, `TEST_IMAGES_NOTE` for test images).

    Returns:
        The path of the report.
    """
    if model not in pretrained_names():
        raise ValueError(f"Unknown network; known: {', '.join(pretrained_names())}. Received: model={model!r}")
    if len(images) == 0:
        raise ValueError("Nothing to explain: no readable image was given")
    if len(image_names) != len(images):
        raise ValueError(f"Give one name per image. Received: {len(image_names)} names for {len(images)} images")
    os.makedirs(out_dir, exist_ok=True)
    with warnings.catch_warnings():
        # The report says which explanations could not move, in its sentences and figures.
        warnings.simplefilter("ignore", ExplanationOutcomeWarning)
        return _write_demo(images, image_names, out_dir, model, labels, steps, attack_steps, all_networks, log,
                           images_note)


def _write_demo(images, image_names, out_dir, model, labels, steps, attack_steps, all_networks, log, images_note):
    stages = _Stages(4 + bool(all_networks), log)
    stages.start("loading the shipped networks")
    names = tuple(pretrained_card(model)["class_names"])
    networks = {name: pretrained(name) for name in dict.fromkeys([model, STANDARD_MODEL])}
    stages.start(f"explaining {len(images)} images with {model}")
    explainer = AdversarialExplainer(networks[model], steps=steps, class_names=names, sanity_check=False)
    explained = explainer.explain_standard(images, labels)
    sections = [
        {"heading": "What this shows", "text": INTRODUCTION + "\n\n" + plots.EXPLANATION_GRID_GUIDE},
        _explanation_section(explained, image_names, model, steps, out_dir, images_note),
    ]
    stages.start("drawing class prototypes from a grey image")
    sections.append(_prototype_section(networks, names, steps, out_dir))
    stages.start("comparing saliency and Grad-CAM with adversarial explanations under attack")
    sections.append(_comparison_section(networks, images, names, steps, attack_steps, out_dir))
    if all_networks:
        stages.start("explaining the images with all four shipped networks")
        sections.append(_all_networks_section(images, labels, names, steps, out_dir))
    path = report.write_report(os.path.join(out_dir, "report.html"), "keras-robust demo", sections)
    stages.done()
    return path


class _Stages:
    """Prints `[k/n] what…` as each stage starts, and the time taken at the end."""

    def __init__(self, total, log):
        self.total, self.log, self.count, self.begin = total, log, 0, time.perf_counter()

    def start(self, what):
        self.count += 1
        self.log(f"[{self.count}/{self.total}] {what}")

    def done(self):
        self.log(f"done in {time.perf_counter() - self.begin:.0f} s")


def _explanation_section(explained, image_names, model, steps, out_dir, note):
    grid = plots.explanation_grid(explained, os.path.join(out_dir, "explanations.png"),
                                  max_images=len(explained.original))
    rows = []
    for i, name in enumerate(image_names):
        for j, role in enumerate(_target_roles(explained)):
            rows.append({"image": name, "target": role + explained.target_name(i, j),
                         "confidence before": float(explained.confidence_before[i, j]),
                         "confidence after": float(explained.confidence_after[i, j]),
                         "target on top": bool(explained.target_is_top[i, j]),
                         "outcome": str(explained.outcome[i, j])})
    return {"heading": f"Adversarial explanations by {findings.network_label(model)}",
            "text": note + "\n\n" + findings.outcome_findings(explained, steps),
            "figures": [(grid, f"Explanations by {findings.network_label(model)}")], "table": rows}


def _target_roles(explanation):
    """Labels of the standard targets: first, runner-up, then every class."""
    return ["first: ", "runner-up: "] + [""] * (explanation.targets.shape[1] - 2)


def _prototype_section(networks, names, steps, out_dir):
    figures, variations, confidences, outcomes = [], {}, {}, []
    grey = np.full((1, 32, 32, 3), PROTOTYPE_GREY, "float32")
    for name, network in networks.items():
        explainer = AdversarialExplainer(network, steps=steps, class_names=names, sanity_check=False)
        prototypes = explainer.explain(grey, np.arange(len(names))[None, :])
        label = findings.network_label(name)
        figure = plots.explanation_grid(prototypes, os.path.join(out_dir, f"prototypes-{name}.png"))
        figures.append((figure, f"Class prototypes by {label}"))
        variations[label] = findings.relative_total_variation(prototypes.delta)
        confidences[label] = float(np.mean(prototypes.confidence_after))
        outcomes.append(f"{label}: " + findings.outcome_findings(prototypes, steps))
    return {"heading": "Class prototypes",
            "text": "\n\n".join([PROTOTYPES_NOTE, findings.smoothness_findings(variations, confidences, "prototypes"),
                                  *outcomes]),
            "figures": figures}


def _comparison_section(networks, images, names, steps, attack_steps, out_dir):
    figures, rows, summaries = [], [], {}
    for name, network in networks.items():
        predicted = np.argmax(predict_logits(network, images), axis=1)
        explainer = AdversarialExplainer(network, steps=steps, class_names=names, sanity_check=False)
        # A photo whose class no small perturbation changes is shown as unchanged, not an error.
        comparison = compare_explanations(network, images, predicted, methods=COMPARISON_METHODS,
                                          attack_steps=attack_steps, explainer=explainer,
                                          attack_sanity_check=False)
        label = findings.network_label(name)
        figure = plots.comparison_panel(comparison, os.path.join(out_dir, f"comparison-{name}.png"),
                                        max_images=len(images), class_names=names)
        figures.append((figure, f"Saliency and Grad-CAM under attack on {label}"))
        summaries[label] = comparison.summary()
        rows.append(findings.comparison_row(label, summaries[label]))
    text = [COMPARISON_NOTE] + [findings.comparison_findings(label, summary) for label, summary in summaries.items()]
    if len(summaries) == 2:
        text.append(findings.robust_versus_standard(*summaries, summaries))
    return {"heading": "Saliency and Grad-CAM under attack (claim 1)", "text": "\n\n".join(text),
            "figures": figures, "table": rows}


def _all_networks_section(images, labels, names, steps, out_dir):
    figures, variations, confidences, outcomes = [], {}, {}, []
    for name in pretrained_names():
        explainer = AdversarialExplainer(pretrained(name), steps=steps, class_names=names, sanity_check=False)
        explained = explainer.explain_standard(images, labels)
        figure = plots.explanation_grid(explained, os.path.join(out_dir, f"all-networks-{name}.png"),
                                        max_images=len(images))
        label = findings.network_label(name)
        figures.append((figure, f"Explanations by {label}"))
        variations[label] = findings.relative_total_variation(explained.delta)
        confidences[label] = float(np.mean(explained.confidence_after))
        outcomes.append(f"{label}: " + findings.outcome_findings(explained, steps))
    return {"heading": "The same images explained by all four networks (N1, N2, N3, N4)",
            "text": "\n\n".join(["N1: standard training; N2: adversarial training; N3: robust additions and "
                                  "adversarial training; N4: robust additions (docs/method.md §1).",
                                  findings.smoothness_findings(variations, confidences, "explanations"), *outcomes]),
            "figures": figures}
