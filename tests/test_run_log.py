"""The per-epoch log: one row per epoch, only logged columns, atomic files."""

import numpy as np

from keras_robust import run_log


def test_format_and_read_round_trip_with_only_logged_columns(tmp_path):
    rows = [{"epoch": 0, "loss": 2.5, "psi": 220.0}, {"epoch": 1, "loss": 2.0, "psi": 300.5, "l_adv": 0.1}]
    text = run_log.format_log(rows)
    assert text.splitlines()[0] == "epoch,loss,psi,l_adv"
    (tmp_path / "log.csv").write_text(text)
    assert run_log.read_log(tmp_path / "log.csv") == rows
    assert run_log.read_log(tmp_path / "missing.csv") == []


def test_a_rerun_epoch_replaces_its_row_and_files_are_written(tmp_path):
    (tmp_path / "log.csv").write_text("epoch,loss\n0,2.0\n1,nan\n")
    log = run_log.EpochLog(tmp_path)
    log.on_epoch_end(1, {"loss": np.float32(1.5), "accuracy": 0.5})
    rows = run_log.read_log(tmp_path / "log.csv")
    assert rows == [{"epoch": 0, "loss": 2.0}, {"epoch": 1, "loss": 1.5, "accuracy": 0.5}]
    assert (tmp_path / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Per epoch" in (tmp_path / "report.html").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial")]
