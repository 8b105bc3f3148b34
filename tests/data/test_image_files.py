import numpy as np
import pytest
from PIL import Image

from keras_robust.data.image_files import load_images


def test_reads_rgb_in_unit_range_and_resizes_with_warning(tmp_path):
    pixels = np.zeros((32, 32, 3), "uint8")
    pixels[..., 0] = 255
    Image.fromarray(pixels).save(tmp_path / "red.png")
    Image.fromarray(np.full((64, 48), 128, "uint8")).save(tmp_path / "grey.png")
    with pytest.warns(UserWarning, match="grey.png is 48x64; resizing"):
        images = load_images([tmp_path / "red.png", tmp_path / "grey.png"], (32, 32))
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.float32
    np.testing.assert_allclose(images[0, 0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(images[1], 128 / 255, atol=1e-6)


def test_bad_files_are_named(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="notes.txt is not a readable image"):
        load_images([tmp_path / "notes.txt"], (32, 32))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_images([tmp_path / "missing.png"], (32, 32))
    with pytest.raises(ValueError, match="Received: paths=\\[\\]"):
        load_images([], (32, 32))
