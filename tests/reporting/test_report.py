"""Tests for `keras_robust.reporting.report`."""

import base64
import io
import re

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from keras_robust.reporting import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def small_figure(width=3.0, height=2.0):
    figure = Figure(figsize=(width, height))
    figure.add_subplot().plot([0, 1, 2], [1, 0, 1])
    return figure


def decode_png(data):
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
        return image.size


def embedded_pngs(document):
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', document)
    return [base64.b64decode(data) for data in uris]


def test_figure_to_png_bytes_renders_a_bare_figure():
    width, height = decode_png(report.figure_to_png_bytes(small_figure(3.0, 2.0)))
    # Tight bounding box trims the margins, so allow some slack below 300x200.
    assert 200 < width <= 300 and 120 < height <= 200
    assert width > height


def test_write_report_is_self_contained_and_escaped(tmp_path):
    png_path = tmp_path / "given.png"
    png_path.write_bytes(report.figure_to_png_bytes(small_figure(4.0, 3.0)))
    sections = [
        {
            "heading": "Robustness <N4>",
            "text": "First paragraph <script>alert(1)</script> & more.\n\nSecond paragraph.",
            "figures": [small_figure(), str(png_path)],
            "table": [
                {"network": "N4", "attack_ara": 0.014237, "btr_ara": np.float32(0.03951234), "num_images": 1000},
                {"network": "N3", "attack_ara": 0.0188, "final_psi": None},
            ],
        },
        {"heading": "Only a heading"},
    ]
    written = report.write_report(tmp_path / "report.html", "ARA <report> & more", sections)
    assert written == str(tmp_path / "report.html")
    document = (tmp_path / "report.html").read_text(encoding="utf-8")

    assert "<title>ARA &lt;report&gt; &amp; more</title>" in document
    assert "<h1>ARA &lt;report&gt; &amp; more</h1>" in document
    assert "<h2>Robustness &lt;N4&gt;</h2>" in document and "<h2>Only a heading</h2>" in document
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more." in document
    assert "<script" not in document
    assert document.count("<p>") == 2

    assert "<th>network</th><th>attack ara</th><th>btr ara</th><th>num images</th><th>final psi</th>" in document
    # A column's floats share the decimals its smallest needs for three significant digits.
    assert "<td>0.0142</td>" in document and "<td>0.0188</td>" in document and "<td>0.0395</td>" in document
    assert "<td>1000</td>" in document
    assert "<td></td>" in document

    images = embedded_pngs(document)
    assert len(images) == 2
    sizes = [decode_png(data) for data in images]
    assert sizes[1] == decode_png(png_path.read_bytes())
    assert not re.search(r"https?://|<link|<script|src=\"(?!data:)", document)


def test_write_report_rejects_bad_sections(tmp_path):
    path = tmp_path / "report.html"
    with pytest.raises(ValueError, match="Received: sections\\[0\\]="):
        report.write_report(path, "t", [{"text": "no heading"}])
    with pytest.raises(ValueError, match="Received: sections\\[1\\] keys \\['figure'\\]"):
        report.write_report(path, "t", [{"heading": "a"}, {"heading": "b", "figure": []}])
    with pytest.raises(ValueError, match="Received: sections="):
        report.write_report(path, "t", {"heading": "not a list"})
    with pytest.raises(ValueError, match="Received: title=3"):
        report.write_report(path, 3, [])
    with pytest.raises(ValueError, match="Received: sections\\[0\\]\\['table'\\]"):
        report.write_report(path, "t", [{"heading": "h", "table": [["a"]]}])
    not_png = tmp_path / "figure.png"
    not_png.write_text("not an image")
    with pytest.raises(ValueError, match="Received: .*figure.png"):
        report.write_report(path, "t", [{"heading": "h", "figures": [not_png]}])
    with pytest.raises(ValueError, match="Received: 42"):
        report.write_report(path, "t", [{"heading": "h", "figures": [42]}])
    assert not path.exists()


def test_figure_to_png_bytes_rejects_non_figures():
    with pytest.raises(ValueError, match="Received: figure='plot.png'"):
        report.figure_to_png_bytes("plot.png")


def test_tables_share_decimals_per_column_and_say_yes_or_no(tmp_path):
    rows = [{"a": 0.232, "flag": True, "b": 2.3026}, {"a": 0.03401, "flag": False, "b": 1000.5},
            {"a": 0.004698, "flag": np.bool_(True), "b": float("nan")}]
    sections = [{"heading": "h", "table": rows}]
    document = open(report.write_report(tmp_path / "r.html", "t", sections), encoding="utf-8").read()
    cells = re.findall(r"<td>([^<]*)</td>", document)
    assert cells == ["0.23200", "yes", "2.303", "0.03401", "no", "1000.500", "0.00470", "yes", "nan"]


def test_figures_take_captions_and_fit_the_page(tmp_path):
    sections = [{"heading": "h", "figures": [(small_figure(), "Prototypes by N3 <x>")]}]
    document = open(report.write_report(tmp_path / "r.html", "t", sections), encoding="utf-8").read()
    assert "<figcaption>Prototypes by N3 &lt;x&gt;</figcaption>" in document
    assert 'alt="Prototypes by N3 &lt;x&gt;"' in document
    assert "max-width: 100%" in document and "overflow-x" not in document
