"""The Open Inference Protocol's model names: `<name>` predicts, `<name>-explainer` explains.

V2 has one inference verb, `infer`, so each exported model's explain
signature is served as a model of its own, as KServe names explainers.
"""

from keras_robust.common.defaults import EXPLAINER_SUFFIX


def v2_model(plane, name, received):
    """`(served model, signature)` of the V2 model `name`; `<name>-explainer` is explain.

    `received` says where the name came from, for the 404 of an unknown one.
    """
    if name not in plane.models and name.endswith(EXPLAINER_SUFFIX):
        return plane.model(name[:-len(EXPLAINER_SUFFIX)], received), "explain"
    return plane.model(name, received), "serving_default"


def check_explainer_names(models):
    """`<name>-explainer` is the explain endpoint of `<name>`; no model may take that name."""
    for name in models:
        if name.endswith(EXPLAINER_SUFFIX) and name[:-len(EXPLAINER_SUFFIX)] in models:
            raise ValueError(
                f"Model {name!r} would hide the explain endpoint of model {name[:-len(EXPLAINER_SUFFIX)]!r} "
                f"over the Open Inference Protocol; export it under another name. Received: {name!r}"
            )
