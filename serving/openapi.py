"""The OpenAPI 3.1 document of every HTTP route, served at `GET /openapi.json`.

The routes take the raw request (see `serving.open_inference.rest_routes`), so FastAPI cannot
derive their bodies; the document is written here. Its V2 schemas are the
Open Inference Protocol's REST specification (`inference_request`,
`inference_response`, `metadata_*`, ...), with the fields KServe's client
adds (`model_name`, `model_version`), the binary tensor data extension, this
server's explain endpoint and Triton's model configuration and statistics.
TF Serving's REST API has no published schema; its schemas here are the
request and response formats of TF Serving's REST documentation.

Every error, at any route, is `{"error": message}` (`serving.transport.http_io`).
"""

import base64
import io

from PIL import Image

from keras_robust import __version__
from keras_robust.common.defaults import V2_SUFFIXES
from keras_robust.export.card import EXPLAIN_OUTPUTS, OUTPUT_MEANINGS
from keras_robust.serving.open_inference.wire import HEADER_LENGTH
from keras_robust.serving.plane.inputs import MAX_DIGITS

DATATYPE = {"enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                      "FP16", "FP32", "FP64", "BYTES"]}
# The errors a route taking a body can answer: malformed (400), unknown model or
# version (404), a body too slow (408) or too large (413), the server full (503),
# the deadline passed (504).
BODY_ERRORS = (400, 404, 408, 413, 415, 503, 504)
ERROR_REASONS = {400: "A malformed request, named in the message", 404: "No such model, version or route",
                 405: "The route takes another method", 408: "The body did not arrive in time",
                 413: "The request is larger than the server's limits",
                 415: "A compressed body (Content-Encoding): bodies are read uncompressed", 503: "The server is busy or the "
                 "version failed to load", 504: "The answer missed its deadline"}


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required=(), **properties):
    return {"type": "object", "required": list(required), "properties": properties}


def _array(items):
    return {"type": "array", "items": items}


STRING, INTEGER, NUMBER, BOOLEAN = ({"type": kind} for kind in ("string", "integer", "number", "boolean"))
SHAPE = _array(INTEGER)
PARAMETERS = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
TENSOR_DATA = _array({"anyOf": [_ref("tensor_data"), NUMBER, STRING, BOOLEAN]})
BINARY = {"schema": {"type": "string", "format": "binary"}}

SCHEMAS = {
    "error": _object(["error"], error=STRING),
    "liveness": _object(["status"], status={"const": "alive"}),
    # TF Serving's REST API (and KServe V1).
    "predict_request": {
        **_object(signature_name=STRING, method=STRING, instances={"type": "array"},
                  inputs={"type": ["array", "object"]}),
        "description": "Row format (`instances`: one entry per example, a value or an object of named "
                       "inputs) or columnar format (`inputs`: an array, or an object of named inputs); "
                       "an image may be `{\"b64\": ...}`, an encoded PNG or JPEG. `:predict` runs the "
                       "`signature_name`; `:explain` the explanation `method`: `adversarial` (default) or an "
                       "attribution method (`saliency`, `smoothgrad`, `integrated_gradients`, `grad_cam`).",
    },
    "predict_response": {"type": "object", "properties": {"predictions": {"type": "array"},
                                                          "outputs": {"type": ["array", "object"]}}},
    # An explanation's answer (row format; the columnar format has one array per name), its outcome included.
    "explanation": _object(EXPLAIN_OUTPUTS, **{
        name: {**(BOOLEAN if name == "target_is_top" else INTEGER if name == "first_met_step"
                  else NUMBER if name == "target_confidence" else {"type": "array"}),
               "description": OUTPUT_MEANINGS[name]} for name in EXPLAIN_OUTPUTS}),
    "attribution": _object(["attributions"], attributions={"type": "array",
                                                           "description": OUTPUT_MEANINGS["attributions"]}),
    "explain_response": {"type": "object", "properties": {
        "predictions": _array({"anyOf": [_ref("explanation"), _ref("attribution")]}), "outputs": {"type": "object"}}},
    "model_status": _object(["model_version_status"], ready=BOOLEAN, model_version_status=_array(_object(
        ["version", "state", "status"], version=STRING, state=STRING,
        status=_object(["error_code", "error_message"], error_code=STRING, error_message=STRING)))),
    "tf_model_metadata": _object(["model_spec", "metadata"], metadata=_object(["signature_def"]), model_spec=_object(
        ["name", "signature_name", "version"], name=STRING, signature_name=STRING, version=STRING)),
    "model_listing": _object(["models", "limits"], limits={"type": "object"}, models=_array(_object(
        ["name", "versions", "default_version", "failed_versions"], name=STRING, versions=_array(INTEGER),
        default_version={"type": ["integer", "null"]}, failed_versions=_array(INTEGER)))),
    # The Open Inference Protocol.
    "server_live": _object(["live"], live=BOOLEAN),
    "server_ready": _object(["ready"], ready=BOOLEAN),
    "model_ready": _object(["name", "ready"], name=STRING, ready=BOOLEAN),
    "metadata_server_response": _object(["name", "version", "extensions"], name=STRING, version=STRING,
                                        extensions=_array(STRING)),
    "metadata_tensor": _object(["name", "datatype", "shape"], name=STRING, datatype=DATATYPE,
                               shape=SHAPE),
    "metadata_model_response": _object(["name", "platform", "inputs", "outputs"], name=STRING, platform=STRING,
                                       versions=_array(STRING), inputs=_array(_ref("metadata_tensor")),
                                       outputs=_array(_ref("metadata_tensor"))),
    "tensor_data": TENSOR_DATA,
    "request_input": _object(["name", "shape", "datatype"], name=STRING, shape=SHAPE,
                             datatype=DATATYPE, parameters=PARAMETERS, data=_ref("tensor_data")),
    "request_output": _object(["name"], name=STRING, parameters=PARAMETERS),
    "inference_request": _object(["inputs"], id=STRING, model_name=STRING, model_version=STRING,
                                 parameters=PARAMETERS, inputs={**_array(_ref("request_input")), "minItems": 1},
                                 outputs=_array(_ref("request_output"))),
    "response_output": _object(["name", "shape", "datatype"], name=STRING, shape=SHAPE,
                               datatype=DATATYPE, parameters=PARAMETERS, data=_ref("tensor_data")),
    "inference_response": _object(["model_name", "outputs"], model_name=STRING, model_version=STRING, id=STRING,
                                  parameters=PARAMETERS, outputs=_array(_ref("response_output"))),
    # Triton's extensions.
    "model_config_tensor": _object(["name", "data_type", "dims"], name=STRING, data_type=STRING, dims=SHAPE,
                                   optional=BOOLEAN, reshape=_object(["shape"], shape=SHAPE)),
    "model_config": _object(["name", "platform", "max_batch_size", "input", "output"], name=STRING,
                            platform=STRING, max_batch_size=INTEGER, version_policy={"type": "object"},
                            input=_array(_ref("model_config_tensor")), output=_array(_ref("model_config_tensor")),
                            model_transaction_policy=_object(["decoupled"], decoupled=BOOLEAN),
                            dynamic_batching=_object(["max_queue_delay_microseconds"],
                                                     max_queue_delay_microseconds=INTEGER)),
    "statistic_duration": _object(["count", "ns"], count=INTEGER, ns=INTEGER),
    "model_statistics": _object(
        ["name", "version", "last_inference", "inference_count", "execution_count", "inference_stats",
         "batch_stats"], name=STRING, version=STRING, last_inference=INTEGER, inference_count=INTEGER,
        execution_count=INTEGER, batch_stats=_array({"type": "object"}),
        inference_stats={"type": "object", "additionalProperties": _ref("statistic_duration")}),
    "statistics_response": _object(["model_stats"], model_stats=_array(_ref("model_statistics"))),
    "repository_index_request": {**_object(ready=BOOLEAN), "additionalProperties": False},
    "repository_index": _array(_object(["name", "version", "state", "reason"], name=STRING, version=STRING,
                                       state={"enum": ["READY", "UNAVAILABLE"]}, reason=STRING)),
}


def _json(schema):
    return {"application/json": {"schema": schema}}


def _responses(ok, *errors):
    """`ok` (a schema, or a full `content` map) as 200, and each error status's `{"error": ...}` body."""
    content = ok if "application/json" in ok else _json(ok)
    answers = {"200": {"description": "OK", "content": content}}
    for status in sorted(set(errors) | {404, 405}):  # any path may be unknown or take another method
        answers[str(status)] = {"description": ERROR_REASONS[status], "content": _json(_ref("error"))}
    return answers


def _path_parameters(path, names, versions):
    """The path's parameters where it has them: `name`, one of `names`, and `version`, one of `versions`."""
    parameters = []
    if "{name}" in path:
        parameters.append({"name": "name", "in": "path", "required": True,
                           "schema": {"type": "string", "enum": list(names)}})
    if "{version}" in path:
        parameters.append({"name": "version", "in": "path", "required": True,
                           "schema": {"type": "string", "enum": [str(v) for v in versions]}})
    return parameters


def _examples(card):
    """Requests a model of `card` answers: `(V1 predict, V1 explain, V2 infer, V2 explain)` bodies.

    Gray images of the model's input size, so that a reader (or a fuzzer's
    examples phase) sees bodies the server takes.
    """
    _, height, width, channels = card["input"]["shape"]
    png = io.BytesIO()
    Image.new("RGB" if channels == 3 else "L", (width, height), "gray").save(png, format="PNG")
    encoded = {"b64": base64.b64encode(png.getvalue()).decode()}
    images = {"name": "images", "shape": [1, height, width, channels], "datatype": "FP32",
              "data": [0.5] * (height * width * channels)}
    targets = {"name": "targets", "shape": [1], "datatype": "INT32", "data": [1]}
    return ({"instances": [encoded]}, {"instances": [{"images": encoded, "targets": 1, "steps": 2}]},
            {"inputs": [images]}, {"inputs": [images, targets], "parameters": {"steps": 2}})


def _operation(summary, responses, body=None, parameters=(), example=None, body_required=True):
    """An operation; `example`, a JSON body, is added to `body`'s JSON media type."""
    operation = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        content = dict(body)
        content["application/json"] = {**body["application/json"], "example": example}
        operation["requestBody"] = {"required": body_required, "content": content}
    return operation


def _v1_paths(models, versions, examples):
    paths = {"/v1/models": {"get": _operation("The served models and the server's limits",
                                              _responses(_ref("model_listing")))}}
    predict_body = _json(_ref("predict_request"))
    for prefix in ("/v1/models/{name}", "/v1/models/{name}/versions/{version}"):
        parameters = _path_parameters(prefix, models, versions)
        paths[prefix] = {"get": _operation("TF Serving's model status", _responses(_ref("model_status"), 503),
                                           parameters=parameters)}
        paths[prefix + "/metadata"] = {"get": _operation(
            "TF Serving's model metadata: both signatures and the model card",
            _responses(_ref("tf_model_metadata"), 503), parameters=parameters)}
        paths[prefix + ":predict"] = {"post": _operation(
            "TF Serving's predict (`signature_name` `serving_default` or `explain`)",
            _responses(_ref("predict_response"), *BODY_ERRORS), predict_body, parameters, examples[0])}
        paths[prefix + ":explain"] = {"post": _operation(
            "KServe V1's explain: adversarial explanations toward `targets`, each with its outcome "
            "(`first_met_step`, `target_is_top`), or the attributions of the `method` named",
            _responses(_ref("explain_response"), *BODY_ERRORS), predict_body, parameters, examples[1])}
    return paths


def _v2_paths(models, versions, examples):
    names = list(models) + [name + suffix for name in models for suffix in V2_SUFFIXES.values()]
    header = {"name": HEADER_LENGTH, "in": "header", "required": False,
              "description": "With a binary body: the length of its JSON header.",
              "schema": {"type": "string", "pattern": f"^[0-9]{{1,{MAX_DIGITS}}}$"}}
    infer_body = {**_json(_ref("inference_request")), "application/octet-stream": BINARY}
    infer_answer = {**_json(_ref("inference_response")), "application/octet-stream": BINARY}
    paths = {
        "/v2/health/live": {"get": _operation("Server liveness", _responses(_ref("server_live")))},
        "/v2/health/ready": {"get": _operation("Server readiness", _responses(_ref("server_ready")))},
        "/v2": {"get": _operation("Server metadata", _responses(_ref("metadata_server_response")))},
    }
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        parameters = _path_parameters(prefix, names, versions)
        paths[prefix] = {"get": _operation("Model metadata", _responses(_ref("metadata_model_response"), 503),
                                           parameters=parameters)}
        paths[prefix + "/ready"] = {"get": _operation("Model readiness", _responses(_ref("model_ready"), 503),
                                                      parameters=parameters)}
        paths[prefix + "/infer"] = {"post": _operation(
            "Inference: a prediction, or an explanation for `<name>-explainer`",
            _responses(infer_answer, *BODY_ERRORS), infer_body, [*parameters, header], examples[2])}
        explain_parameters = _path_parameters(prefix, models, versions)
        paths[prefix + "/explain"] = {"post": _operation(
            "Adversarial explanations toward `targets` (rho and steps as tensors or parameters); outputs "
            + "; ".join(f"`{name}` {OUTPUT_MEANINGS[name]}" for name in EXPLAIN_OUTPUTS),
            _responses(infer_answer, *BODY_ERRORS), infer_body, [*explain_parameters, header], examples[3])}
        paths[prefix + "/config"] = {"get": _operation("Triton's model configuration",
                                                       _responses(_ref("model_config"), 503), parameters=parameters)}
        paths[prefix + "/stats"] = {"get": _operation("Triton's model statistics",
                                                      _responses(_ref("statistics_response")), parameters=parameters)}
    paths["/v2/models/stats"] = {"get": _operation("Triton's statistics of every model",
                                                   _responses(_ref("statistics_response")))}
    paths["/v2/repository/index"] = {"post": _operation(
        "Triton's repository index: every V2 model and version, READY or UNAVAILABLE (the body is optional)",
        _responses(_ref("repository_index"), 400, 408), _json(_ref("repository_index_request")),
        example={"ready": True}, body_required=False)}
    return paths


def openapi_document(cards):
    """The OpenAPI document of a server serving the models of `cards` (model cards).

    Its path parameters list the names and versions served, and its request
    examples are the first model's.
    """
    models = [card["name"] for card in cards]
    versions = sorted({int(version) for card in cards for version in card["versions"]})
    examples = _examples(cards[0])
    page = {"text/html": {"schema": {"type": "string"}}, **_json(_ref("liveness"))}
    paths = {
        "/": {"get": _operation("The page for a browser (Accept: text/html), else KServe V1's liveness",
                                _responses(page))},
        "/openapi.json": {"get": _operation("This document", _responses({"type": "object"}))},
        **_v1_paths(models, versions, examples),
        **_v2_paths(models, versions, examples),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "keras-robust serving", "version": __version__,
                 "description": "Predictions and adversarial explanations over TF Serving's REST API, "
                                "KServe V1 and the Open Inference Protocol (V2)."},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
