"""A service answering predictions and explanations over HTTP and gRPC.

`create_app(export_dir)` serves every model `keras_robust.export.export_model`
wrote under `export_dir`: TF Serving's `:predict`, status and metadata routes,
KServe's `:explain` verb for adversarial explanations (docs/method.md §5), the
Open Inference Protocol (V2) with an explain extension and Triton's model
configuration and statistics, optionally over gRPC too (TF Serving's
`PredictionService` and V2's `GRPCInferenceService` on one port), and a
browser page at `/`.
`serve(export_dir)` runs it with uvicorn.
"""

from keras_robust.serving.app import create_app, serve
from keras_robust.serving.plane.backends import load_backend
from keras_robust.serving.plane.limits import Limits

__all__ = ["Limits", "create_app", "load_backend", "serve"]
