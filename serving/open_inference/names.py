"""The Open Inference Protocol's model names: `<name>` predicts, `<name>-explainer` explains, and
`<name>-saliency`, `<name>-smoothgrad`, `<name>-integrated-gradients`, `<name>-grad-cam` attribute.

V2 has one inference verb, `infer`, so each exported model's other signatures are served as models of
their own, as KServe names explainers.
"""

from keras_robust.common.defaults import V2_SUFFIXES, v2_endpoints_named


def v2_model(plane, name, received):
    """`(served model, signature)` of the V2 model `name`.

    `received` says where the name came from, for the 404 of an unknown one.
    """
    if name not in plane.models:
        for base, signature in v2_endpoints_named(name):
            if base in plane.models:
                return plane.models[base], signature
    return plane.model(name, received), "serving_default"


def v2_name(served, signature):
    """The V2 model name of `served`'s `signature`."""
    return served.name + V2_SUFFIXES.get(signature, "")


def check_explainer_names(models):
    """`<name>-explainer` (and each attribution suffix) is an endpoint of `<name>`; no model may take that name."""
    for name in models:
        for base, signature in v2_endpoints_named(name):
            if base in models:
                raise ValueError(
                    f"Model {name!r} would hide the {signature} endpoint of model {base!r} "
                    f"over the Open Inference Protocol; export it under another name. Received: {name!r}"
                )
