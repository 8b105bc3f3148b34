"""`RunFolder`: a training run's folder and every file in it, each named once."""

import json
import os
import shutil

from keras_robust.common.atomic import PARTIAL_PREFIX, write_atomically


def _in_run(name, doc):
    return property(lambda self: os.path.join(self.path, name), doc=doc)


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

    backup = _in_run("backup", "The checkpoints (`keras_robust.training.checkpoint`).")
    identity = _in_run("run.json", "What the checkpoints depend on: the network and the data's shape.")
    log = _in_run("log.csv", "One row per finished epoch.")
    curves = _in_run("training_curves.png", "The log's curves.")
    report = _in_run("report.html", "The curves and the log, in one page.")
    model = _in_run("model.keras", "The newest good model.")
    tensorboard = _in_run("tensorboard", "TensorBoard's logs.")
    summary = _in_run("summary.json", "The finished run's settings and test figures.")

    def make(self):
        os.makedirs(self.path, exist_ok=True)
        return self

    def remove_leftovers(self):
        """Removes the partial files a killed write left (`keras_robust.common.atomic`); call
        it only where no write is under way, as the one process writing the run starts."""
        for name in os.listdir(self.path):
            if name.startswith(PARTIAL_PREFIX):
                path = os.path.join(self.path, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

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
