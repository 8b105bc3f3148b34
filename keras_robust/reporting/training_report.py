"""`TrainingReport`: a run's `log.csv`, `training_curves.png` and `report.html`, kept current."""

import keras

from keras_robust.common.atomic import write_atomically
from keras_robust.reporting import plots, report
from keras_robust.reporting.run_log import format_log


class TrainingReport(keras.callbacks.Callback):
    """Rewrites a run's log, curves and report from the epochs `run_state` saved.

    Goes after `run_state` in the callbacks: at the start it reports the
    epochs a resumed run restored (so each finished epoch appears exactly
    once), then after each epoch that was saved. Each file is replaced
    atomically.

    Example:

    >>> run_state = RunState(run)
    >>> model.fit(..., callbacks=[run_state, TrainingReport(run, run_state)])

    Args:
        run: The run's `RunFolder`.
        run_state: The run's `RunState` callback, which holds the rows.
        write: Whether this process writes (only a multi-worker run's chief does).
    """

    def __init__(self, run, run_state, write=True):
        super().__init__()
        self.run = run
        self.run_state = run_state
        self.write = write

    def on_train_begin(self, logs=None):
        self._write()

    def on_epoch_end(self, epoch, logs=None):
        if not self.model.stop_training and self.run_state.failure is None:
            self._write()

    def _write(self):
        rows = self.run_state.rows
        if not rows or not self.write:
            return
        write_atomically(self.run.log, format_log(rows))
        figure = plots.training_curves(rows, self.run.curves)
        report.write_report(self.run.report, f"Training run {self.run.name}", [
            {"heading": "Training curves", "figures": [figure],
             "text": f"{len(rows)} epochs finished; the last is epoch {rows[-1]['epoch'] + 1}."},
            {"heading": "Per epoch", "table": rows},
        ])
