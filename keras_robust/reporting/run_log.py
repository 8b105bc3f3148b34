"""A training run's per-epoch log, `log.csv`: one row per finished epoch, only logged columns."""

import csv
import io
import os


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

