import numpy as np
import pytest

from keras_robust.common.atomic import save_npz_atomically


def test_npz_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "out" / "min_rmse.npz"
    save_npz_atomically(path, attack=np.arange(3.0))
    save_npz_atomically(path, attack=np.arange(4.0))
    np.testing.assert_array_equal(np.load(path)["attack"], np.arange(4.0))

    def dies_half_way(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_npz_atomically(path, attack=np.zeros(9))
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(path)["attack"], np.arange(4.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["min_rmse.npz"]
