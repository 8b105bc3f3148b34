"""The per-epoch log: only logged columns, read back as written."""

from keras_robust.reporting import run_log


def test_format_and_read_round_trip_with_only_logged_columns(tmp_path):
    rows = [{"epoch": 0, "loss": 2.5, "psi": 220.0}, {"epoch": 1, "loss": 2.0, "psi": 300.5, "l_adv": 0.1}]
    text = run_log.format_log(rows)
    assert text.splitlines()[0] == "epoch,loss,psi,l_adv"
    (tmp_path / "log.csv").write_text(text)
    assert run_log.read_log(tmp_path / "log.csv") == rows
    assert run_log.read_log(tmp_path / "missing.csv") == []
