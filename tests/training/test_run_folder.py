"""`keras_robust.training.run_folder.RunFolder`."""

import os

from keras_robust.common.atomic import atomic_path
from keras_robust.training.run_folder import RunFolder


def test_every_file_of_a_run_has_one_name():
    run = RunFolder("runs/n4")
    assert (run.model, run.summary, run.backup) == ("runs/n4/model.keras", "runs/n4/summary.json", "runs/n4/backup")
    assert RunFolder.of_model("/x/y/model.keras").path == "/x/y" and run.name == "n4"
    assert RunFolder.read_json(None) is None and RunFolder.read_json("/no/such.json") is None


def test_what_killed_writes_left_is_removed_and_nothing_else(tmp_path):
    run = RunFolder(tmp_path).make()
    run.write_json(run.summary, {"epochs": 3})
    killed = atomic_path(run.model).__enter__()  # a write that never finished
    os.makedirs(os.path.join(run.path, ".partial-folder"))
    assert os.path.basename(killed).startswith(".partial-")
    run.remove_leftovers()
    assert sorted(os.listdir(run.path)) == ["summary.json"]
    assert run.read_json(run.summary) == {"epochs": 3}
