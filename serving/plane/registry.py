"""The served models: every export under the export folder, every version its card lists.

Each version is loaded once, at start-up, into one backend that every request
shares. A version that fails to load is reported by the status endpoint (as
TF Serving reports it) instead of stopping the versions that did load.
"""

import logging
import os

from keras_robust.export import read_card
from keras_robust.export.card import CARD_FILE
from keras_robust.serving.plane.backends import load_backend
from keras_robust.serving.plane.errors import ServingError, unknown_version
from keras_robust.serving.plane.inputs import parse_decimal

logger = logging.getLogger("keras_robust.serving")

METHOD_NAME = "tensorflow/serving/predict"


def load_models(export_dir, kind="onnx", device="cpu"):
    """`{name: ServedModel}` of every export in `export_dir` (or `export_dir` itself).

    `export_dir` is the `out_dir` given to `export_model`, holding one folder
    per model; one model's folder (with its `model_card.json`) works too.
    """
    if not os.path.isdir(export_dir):
        raise FileNotFoundError(
            f"The export folder does not exist (or is a file). Received: export_dir={export_dir!r}"
        )
    if os.path.exists(os.path.join(export_dir, CARD_FILE)):
        folders = [export_dir]
    else:
        entries = sorted(os.path.join(export_dir, entry) for entry in os.listdir(export_dir))
        folders = [path for path in entries if os.path.exists(os.path.join(path, CARD_FILE))]
    if not folders:
        raise FileNotFoundError(
            f"No model_card.json in {export_dir} or its subfolders; pass the folder "
            f"`keras-robust export` wrote to. Received: export_dir={export_dir!r}"
        )
    models = {}
    for folder in folders:
        model = ServedModel(folder, read_card(folder), kind, device)
        if model.name in models:
            raise ValueError(f"Two exports are named {model.name!r}. Received: {folder}")
        models[model.name] = model
    if not any(model.backends for model in models.values()):
        raise RuntimeError(f"No model version in {export_dir} could be loaded: see the errors above")
    return models


class ServedModel:
    """One model: a backend per loaded version, an error message per failed one."""

    def __init__(self, model_dir, card, kind, device):
        self.name = card["name"]
        self.card = card
        self.backends, self.failures = {}, {}
        for version in sorted(int(v) for v in card["versions"]):
            try:
                self.backends[version] = load_backend(model_dir, version, kind, device)
            except Exception as error:  # onnxruntime's load errors derive from Exception only
                logger.error("Cannot load version %d of %r: %s", version, self.name, error)
                self.failures[version] = f"{type(error).__name__}: {error}"

    @property
    def versions(self):
        return sorted(int(v) for v in self.card["versions"])

    def backend(self, version=None):
        """The backend of `version` (a path segment), or of the latest loaded version."""
        if version is None:
            if not self.backends:
                raise ServingError(503, f"No version of model {self.name!r} loaded. Received: {self.failures}")
            return self.backends[max(self.backends)]
        number = self._version(version)
        if number in self.failures:
            raise ServingError(
                503, f"Version {number} of model {self.name!r} failed to load. Received: {self.failures[number]}"
            )
        return self.backends[number]

    def status(self, version=None):
        """TF Serving's `GetModelStatus` JSON, `{"model_version_status": [...]}`, and KServe
        V1's `"ready"`: whether a request to this route would be answered."""
        versions = self.versions if version is None else [self._version(version)]
        return {
            "model_version_status": [self._version_status(v) for v in reversed(versions)],
            "ready": any(v in self.backends for v in versions),
        }

    def metadata(self, version=None):
        """TF Serving's `GetModelMetadata` JSON, plus the version's model card.

        TF Serving's `metadata` is a map meant for more entries than
        `signature_def`; the card is one more.
        """
        backend = self.backend(version)
        number = backend.card["version"]
        defs = backend.signature_defs()
        return {
            "model_spec": {"name": self.name, "signature_name": "", "version": str(number)},
            "metadata": {
                "signature_def": {
                    "signature_def": {
                        name: _signature_def(defs[name], spec)
                        for name, spec in backend.card["signatures"].items()
                    }
                },
                "card": backend.card,
            },
        }

    def describe(self):
        """A line of the model list the browser page reads (`GET /v1/models`)."""
        return {
            "name": self.name,
            "versions": sorted(self.backends),
            "default_version": max(self.backends) if self.backends else None,
            "failed_versions": sorted(self.failures),
        }

    def _version(self, version):
        number = parse_decimal(version)
        if number not in self.versions:
            raise unknown_version(self.name, version, self.versions)
        return number

    def _version_status(self, version):
        if version in self.failures:
            state, status = "END", {"error_code": "UNKNOWN", "error_message": self.failures[version]}
        else:
            state, status = "AVAILABLE", {"error_code": "OK", "error_message": ""}
        return {"version": str(version), "state": state, "status": status}


def _signature_def(defs, spec):
    """One SignatureDef in TF Serving's JSON, inputs and outputs in the card's order."""
    return {
        "inputs": {name: _tensor_info(name, *defs["inputs"][name]) for name in spec["inputs"]},
        "outputs": {name: _tensor_info(name, *defs["outputs"][name]) for name in spec["outputs"]},
        "method_name": METHOD_NAME,
    }


def _tensor_info(name, dtype, shape):
    return {
        "dtype": dtype,
        "tensor_shape": {"dim": [{"size": str(size), "name": ""} for size in shape], "unknown_rank": False},
        "name": name,
    }
