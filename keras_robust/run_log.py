"""`EpochLog`: a training run's per-epoch log, curves and report, rewritten whole each epoch."""

import csv
import io
import os

import keras

from keras_robust import plots, report
from keras_robust.atomic import write_atomically

LOG_FILE = "log.csv"
CURVES_FILE = "training_curves.png"
REPORT_FILE = "report.html"


class EpochLog(keras.callbacks.Callback):
    """Writes `log.csv`, `training_curves.png` and `report.html` after every epoch.

    Unlike `keras.callbacks.CSVLogger`, each epoch appears once however often
    the run was interrupted and resumed (a rerun epoch replaces its row), only
    metrics that were logged get a column (no `val_*` columns of `NA`), and
    every file is replaced atomically, so a kill never leaves half a row.

    Args:
        out_dir: The run's folder.
        title: Title of the report.
    """

    def __init__(self, out_dir, title="Training run"):
        super().__init__()
        self.out_dir = os.fspath(out_dir)
        self.title = title
        self.rows = read_log(os.path.join(self.out_dir, LOG_FILE))

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}
        self.rows = sorted([r for r in self.rows if r["epoch"] != epoch] + [row], key=lambda r: r["epoch"])
        write_atomically(os.path.join(self.out_dir, LOG_FILE), format_log(self.rows))
        figure = plots.training_curves(self.rows, os.path.join(self.out_dir, CURVES_FILE))
        last = self.rows[-1]
        report.write_report(os.path.join(self.out_dir, REPORT_FILE), self.title, [
            {"heading": "Training curves", "figures": [figure],
             "text": f"{len(self.rows)} epochs logged; the last is epoch {last['epoch'] + 1}."},
            {"heading": "Per epoch", "table": self.rows},
        ])


def read_log(path):
    """The rows of a `log.csv` as dicts of floats (`epoch` as int); none if there is no file."""
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as file:
        return [
            {key: int(value) if key == "epoch" else float(value) for key, value in row.items() if value != ""}
            for row in csv.DictReader(file)
        ]


def format_log(rows):
    """CSV text with an `epoch` column, then every logged metric in order of first appearance."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()

