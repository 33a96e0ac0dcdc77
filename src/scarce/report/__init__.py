"""Self-contained HTML reports and the images that go in them."""

from scarce.report.html import HtmlReport
from scarce.report.visual import colorize_labels, draw_boxes, overlay_heatmap

__all__ = ["HtmlReport", "colorize_labels", "overlay_heatmap", "draw_boxes"]
