"""`keras-robust demo`: shipped photos, unreadable files, and the report, end to end."""

import re

import numpy as np
import pytest
from PIL import Image

from keras_robust import cli
from keras_robust.data.image_files import load_readable_images
from keras_robust.reporting import demo


def test_sample_photos_ship_with_the_package():
    images, names, skipped = demo.sample_images()
    assert names == ["cat.png", "coffee.png", "horse-silhouette.png", "rocket.png"]
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0.05
    assert skipped == []


def test_read_images_skips_unreadable_files_by_name(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((40, 50, 3), 200, "uint8")).save(good)
    (tmp_path / "bad.jpg").write_text("not an image")
    images, names, skipped = load_readable_images([good, tmp_path / "bad.jpg", tmp_path / "missing.png"])
    assert names == ["good.png"] and images.shape == (1, 32, 32, 3)
    np.testing.assert_allclose(images, 200 / 255, atol=1e-6)
    assert [str(path).rsplit("/", 1)[-1] for path, _ in skipped] == ["bad.jpg", "missing.png"]
    assert "not a readable image" in skipped[0][1] and "No image file" in skipped[1][1]


@pytest.mark.slow
def test_demo_end_to_end_with_a_bad_file_among_good_ones(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 48, 3), dtype="uint8")).save(photos / "noise.png")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cat = demo.SAMPLE_IMAGES_DIR + "/cat.png"
    out = tmp_path / "report"
    code = cli.main(["demo", cat, str(photos / "broken.png"), str(photos / "noise.png"),
                     "--steps", "4", "--attack-steps", "6", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "broken.png" in captured.err and "skipping" in captured.err
    assert "[1/4]" in captured.out and "[4/4]" in captured.out
    assert f"report: {out / 'report.html'}" in captured.out
    html = (out / "report.html").read_text()
    for heading in ("What this shows", "Adversarial explanations by N3 (resnet44-cifar10-all)",
                    "Class prototypes", "Saliency and Grad-CAM under attack"):
        assert heading in html
    for caption in ("Class prototypes by N1 (resnet44-cifar10-standard)",
                    "Saliency and Grad-CAM under attack on N3 (resnet44-cifar10-all)"):
        assert f"<figcaption>{caption}</figcaption>" in html
    # The user's own images: no words about the shipped photos; findings from this run's figures.
    assert "close-ups" not in html and "resized to 32×32" in html
    assert "On N1 (resnet44-cifar10-standard) the class changed on" in html
    assert "a robust network should need more, and" in html and "<th>mean perturbation RMSE</th>" in html
    assert html.count("data:image/png;base64,") == 1 + 2 + 2
    assert "cat.png" in html and "noise.png" in html and "broken.png" not in html
    assert "How to read the explanation pictures" in html and "cannot be unfaithful" not in html
    # The explanations' sentence counts the rows of its own table (2 images × (2 + 10) targets).
    section = html.split("Adversarial explanations by N3")[1].split("Class prototypes")[0]
    top = int(re.search(r"(\d+) of 24 explanations make the target the top class on x \+ δ", section).group(1))
    rows = re.findall(r"<tr>(.*?)</tr>", section.split("<tbody>")[1])
    assert len(rows) == 24 and top == sum("<td>yes</td>" in row for row in rows)
    assert "note:" not in captured.err  # the report, not the console, says which explanations fell short
    for name in ("explanations.png", "prototypes-resnet44-cifar10-all.png",
                 "prototypes-resnet44-cifar10-standard.png", "comparison-resnet44-cifar10-standard.png"):
        assert (out / name).stat().st_size > 1000


def test_demo_refuses_when_nothing_is_readable(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("no")
    code = cli.main(["demo", str(tmp_path / "a.txt"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "None of the image files could be read" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_demo_on_test_images_with_all_four_networks(cifar10_archive, tmp_path, capsys):
    out = tmp_path / "fig4"
    code = cli.main(["demo", "--data", str(cifar10_archive), "--indices", "0", "--all-networks",
                     "--steps", "2", "--attack-steps", "4", "--out", str(out), "--cache-dir", str(tmp_path / "c")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "[5/5] explaining the images with all four shipped networks" in captured.out
    html = (out / "report.html").read_text()
    assert "The same images explained by all four networks" in html and "test image 0" in html
    for name in ("standard", "adv-train", "all", "robust"):
        assert (out / f"all-networks-resnet44-cifar10-{name}.png").exists()
