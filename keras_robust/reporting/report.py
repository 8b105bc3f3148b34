"""Self-contained HTML reports of experiments.

A report is one HTML file with inline CSS and every figure embedded as a
base64 PNG data URI, so it can be mailed, archived or opened offline without
the files it was made from. All text is HTML-escaped.

Example:

>>> from keras_robust import plots, report
>>> report.write_report(
...     "report.html",
...     "N4 on CIFAR-10",
...     [{"heading": "ARA", "figures": [plots.ara_curve(result)], "table": [result.to_dict()]}],
... )
"""

import base64
import html
import io
import os

import numpy as np
from matplotlib.figure import Figure

from keras_robust.common.atomic import write_atomically

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTION_KEYS = ("heading", "text", "figures", "table")

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #ccc; padding-bottom: 0.2em; }
p { white-space: pre-line; line-height: 1.45; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; }  /* wide grids shrink to the page, never scroll */
figcaption { color: #555; font-size: 0.95em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
"""


def write_report(path, title, sections):
    """Writes a self-contained HTML report.

    Args:
        path: Path of the HTML file to write.
        title: Title of the report (plain text).
        sections: A list of dicts, each with a `"heading"` (str) and
            optionally `"text"` (plain text; blank lines separate
            paragraphs), `"figures"` (a list of matplotlib `Figure`s or paths
            to PNG files, each alone or as a `(figure, caption)` pair) and
            `"table"` (a list of dicts, one per row; the header is every key
            in order of first appearance, underscores shown as spaces; a
            column's floats share one number of decimals, enough for its
            smallest to show three significant digits; booleans are yes/no).

    Returns:
        The path written, as a string.
    """
    if not isinstance(title, str):
        raise ValueError(f"`title` must be a string. Received: title={title!r}")
    if not isinstance(sections, (list, tuple)):
        raise ValueError(f"`sections` must be a list of dicts. Received: sections={sections!r}")
    body = "\n".join(_section_html(section, k) for k, section in enumerate(sections))
    document = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )
    return write_atomically(path, document)


def figure_to_png_bytes(figure, dpi=100):
    """Renders a matplotlib figure as PNG bytes.

    Args:
        figure: A `matplotlib.figure.Figure`.
        dpi: Resolution in dots per inch.

    Returns:
        The PNG file's contents, as `bytes`.
    """
    if not isinstance(figure, Figure):
        raise ValueError(f"Expected a matplotlib Figure. Received: figure={figure!r}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def _section_html(section, index):
    if not isinstance(section, dict) or not isinstance(section.get("heading"), str):
        raise ValueError(
            f"Each section must be a dict with a string 'heading'. Received: sections[{index}]={section!r}"
        )
    unknown = sorted(set(section) - set(SECTION_KEYS))
    if unknown:
        raise ValueError(
            f"Section keys must be among {', '.join(SECTION_KEYS)}. Received: sections[{index}] keys {unknown}"
        )
    parts = [f"<section>\n<h2>{html.escape(section['heading'])}</h2>"]
    if section.get("text"):
        parts += [f"<p>{html.escape(p.strip())}</p>" for p in str(section["text"]).split("\n\n") if p.strip()]
    for k, figure in enumerate(section.get("figures") or ()):
        figure, caption = figure if isinstance(figure, tuple) else (figure, None)
        encoded = base64.b64encode(_png_bytes(figure)).decode("ascii")
        alt = html.escape(caption or f"{section['heading']}, figure {k + 1}", quote=True)
        below = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        parts.append(f'<figure><img src="data:image/png;base64,{encoded}" alt="{alt}">{below}</figure>')
    if section.get("table"):
        parts.append(_table_html(section["table"], index))
    parts.append("</section>")
    return "\n".join(parts)


def _png_bytes(figure):
    if isinstance(figure, Figure):
        return figure_to_png_bytes(figure)
    if not isinstance(figure, (str, os.PathLike)):
        raise ValueError(f"Figures must be matplotlib Figures or PNG paths. Received: {figure!r}")
    with open(figure, "rb") as file:
        data = file.read()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"Figure files must be PNG images. Received: {os.fspath(figure)!r}")
    return data


def _table_html(rows, index):
    if not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"A table must be a list of dicts. Received: sections[{index}]['table']={rows!r}")
    # Dicts keep insertion order, so this is the keys in order of first appearance.
    columns = list(dict.fromkeys(key for row in rows for key in row))
    header = "".join(f"<th>{html.escape(str(c).replace('_', ' '))}</th>" for c in columns)
    decimals = {c: _decimals([row.get(c) for row in rows]) for c in columns}
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(_format_cell(row.get(c), decimals[c]))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _decimals(values, least=3, most=6):
    """Decimals for a column: enough for its smallest nonzero float to show three significant digits."""
    floats = [abs(float(v)) for v in values if isinstance(v, (float, np.floating)) and np.isfinite(v) and v != 0]
    if not floats:
        return least
    return int(min(most, max(least, 2 - np.floor(np.log10(min(floats))))))


def _format_cell(value, decimals):
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{decimals}f}" if np.isfinite(value) else str(value)
    return str(value)
