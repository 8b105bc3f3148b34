"""`RunFolder`: a training run's folder and every file in it, each named once."""

import json
import os

from keras_robust.common.atomic import write_atomically


class RunFolder:
    """The folder of one training run.

    It holds `backup/` (the checkpoints, `keras_robust.training.checkpoint`),
    `run.json` (what the checkpoints depend on), `log.csv`,
    `training_curves.png` and `report.html` (one row, point and table line
    per finished epoch), `model.keras` (the newest good model),
    `tensorboard/` and, once training ends, `summary.json`.

    Example:

    >>> run = RunFolder("runs/n4")
    >>> run.model
    'runs/n4/model.keras'
    >>> run.read_json(run.summary)["test"]["accuracy"]
    0.93...

    Args:
        path: The folder; created by `make()`.
    """

    def __init__(self, path):
        self.path = os.fspath(path)

    @classmethod
    def of_model(cls, model_path):
        """The run folder that holds `model_path` (its `summary.json` describes the model)."""
        return cls(os.path.dirname(os.path.abspath(os.fspath(model_path))))

    @property
    def name(self):
        return os.path.basename(os.path.abspath(self.path))

    @property
    def backup(self):
        return os.path.join(self.path, "backup")

    @property
    def identity(self):
        return os.path.join(self.path, "run.json")

    @property
    def log(self):
        return os.path.join(self.path, "log.csv")

    @property
    def curves(self):
        return os.path.join(self.path, "training_curves.png")

    @property
    def report(self):
        return os.path.join(self.path, "report.html")

    @property
    def model(self):
        return os.path.join(self.path, "model.keras")

    @property
    def tensorboard(self):
        return os.path.join(self.path, "tensorboard")

    @property
    def summary(self):
        return os.path.join(self.path, "summary.json")

    def make(self):
        os.makedirs(self.path, exist_ok=True)
        return self

    @staticmethod
    def read_json(path):
        """The JSON value in `path`, or None when there is no such file (or no path)."""
        if not path or not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as file:
            return json.load(file)

    @staticmethod
    def write_json(path, value):
        write_atomically(path, json.dumps(value, indent=2, default=float))
