"""A single-file HTML report: headings, text, tables, plots and image grids, with no external CSS/JS.

Images are embedded as base64 PNG ``data:`` URIs so the one file can be mailed or attached to an issue and
still show everything. All text that comes from callers is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io as _io
import math
import numbers
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image

from scarce.io import PathLike, write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.1em; }
p.subtitle { color: #666; margin-top: 0; }
table.data { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
table.data th, table.data td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
table.data th { background: #f2f2f2; }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3em; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; text-align: center; }
figcaption { font-size: 0.85em; color: #444; }
img { image-rendering: pixelated; }
table.gallery td { padding: 0.2em; vertical-align: top; }
"""


def _png_bytes(image: np.ndarray) -> bytes:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"images must have shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    buffer = _io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _img_tag(png: bytes, alt: str, width: int | None) -> str:
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("image bytes must be a PNG file")
    source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    size = "" if width is None else f' width="{int(width)}"'
    return f'<img src="{source}" alt="{html.escape(alt)}"{size}>'


def _figure(png: bytes, caption: str | None, width: int | None) -> str:
    text = "" if caption is None else f"<figcaption>{html.escape(caption)}</figcaption>"
    return f"<figure>{_img_tag(png, caption or '', width)}{text}</figure>"


def _cell(value: object, float_format: str) -> tuple[str, bool]:
    """Cell text and whether it is numeric (right-aligned); NaN shows as an en dash, as in results tables."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        return ("" if value is None else str(bool(value))), False
    if isinstance(value, numbers.Integral):
        return str(int(value)), True
    if isinstance(value, numbers.Real):
        number = float(value)
        return ("\u2013" if math.isnan(number) else float_format.format(number)), True
    return str(value), False


class HtmlReport:
    """Builds a report block by block; ``render`` gives the document and ``save`` writes it atomically."""

    def __init__(self, title: str, subtitle: str | None = None) -> None:
        self.title = title
        self.subtitle = subtitle
        self._blocks: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        if not 1 <= level <= 6:
            raise ValueError(f"heading level must be 1..6, got {level}")
        self._blocks.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        self._blocks.append(f"<p>{html.escape(text)}</p>")

    def table(self, rows: list[dict[str, object]], caption: str | None = None, float_format: str = "{:.3f}") -> None:
        """One row per dict; the columns are the keys in first-seen order, a missing key leaves the cell empty."""
        if not rows:
            raise ValueError("a table needs at least one row")
        columns = list(dict.fromkeys(key for row in rows for key in row))
        parts = ['<table class="data">']
        if caption is not None:
            parts.append(f"<caption>{html.escape(caption)}</caption>")
        parts.append("<thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in columns) + "</tr></thead>")
        parts.append("<tbody>")
        for row in rows:
            cells = []
            for column in columns:
                text, numeric = _cell(row.get(column), float_format)
                css = ' class="num"' if numeric else ""
                cells.append(f"<td{css}>{html.escape(text)}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
        self._blocks.append("".join(parts))

    def per_class_iou_table(self, names: Sequence[str], values: Sequence[float | None], caption: str) -> None:
        """One row per class and its IoU; an undefined IoU (NaN in memory, null in a re-read JSON) shows as a
        dash, as in results tables."""
        self.table([{"class": name, "IoU": math.nan if value is None else value} for name, value in zip(names, values)],
                   caption=caption)

    def image(self, image: np.ndarray | bytes, caption: str | None = None, width: int | None = None) -> None:
        """An array (uint8 HxW, HxWx3 or HxWx4) or ready PNG bytes; ``width`` scales it in the page (pixels)."""
        png = image if isinstance(image, bytes) else _png_bytes(image)
        self._blocks.append(_figure(png, caption, width))

    def line_plot(
        self,
        x: Sequence[float],
        series: dict[str, Sequence[float]],
        xlabel: str,
        ylabel: str,
        title: str | None = None,
        markers: dict[str, tuple[float, float]] | None = None,
        integer_x: bool = False,
    ) -> Figure:
        """Curves sharing one x axis, drawn with matplotlib's Agg canvas (no pyplot state, no display).

        ``markers`` are labelled points such as the chosen threshold on an mIoU curve; ``integer_x`` puts
        ticks on whole numbers only (phases, epochs). Returns the figure, for callers that inspect it.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        if not series:
            raise ValueError("a line plot needs at least one series")
        for name, values in series.items():
            if len(values) != len(x):
                raise ValueError(f"series {name!r} has {len(values)} values for {len(x)} x positions")
        figure = Figure(figsize=(6.4, 4.0), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.subplots()
        for name, values in series.items():
            # float: an undefined point (NaN, or None re-read from JSON) leaves a gap in the curve
            axes.plot(list(x), np.asarray(values, dtype=np.float64), marker="." if len(x) <= 50 else None, label=name)
        for label, (mx, my) in (markers or {}).items():
            axes.plot([mx], [my], marker="o", color="black", linestyle="none")
            axes.annotate(label, (mx, my), textcoords="offset points", xytext=(6, 6))
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        if integer_x:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if title is not None:
            axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        buffer = _io.BytesIO()
        figure.savefig(buffer, format="png", metadata={"Software": None})
        self._blocks.append(_figure(buffer.getvalue(), title, None))
        return figure

    def gallery(
        self, rows: list[list[tuple[str, np.ndarray]]], caption: str | None = None, width: int | None = None
    ) -> None:
        """A grid of captioned images, e.g. one row per sample: image, CAM, seed, ground truth.

        ``width`` shows every image at that many page pixels, so that small scenes stay legible.
        """
        parts = ['<table class="gallery">']
        if caption is not None:
            parts.append(f"<caption>{html.escape(caption)}</caption>")
        for row in rows:
            cells = "".join(f"<td>{_figure(_png_bytes(image), text, width)}</td>" for text, image in row)
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
        self._blocks.append("".join(parts))

    def render(self) -> str:
        subtitle = "" if self.subtitle is None else f'<p class="subtitle">{html.escape(self.subtitle)}</p>\n'
        body = "\n".join(self._blocks)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(self.title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(self.title)}</h1>\n{subtitle}{body}\n</body>\n</html>\n"
        )

    def save(self, path: PathLike) -> None:
        write_text(path, self.render())
