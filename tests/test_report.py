import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from scarce.report import HtmlReport, colorize_labels, draw_boxes, overlay_heatmap

DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def embedded_images(page: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))) for data in DATA_URI.findall(page)]


def test_document_structure_and_escaping():
    report = HtmlReport("mIoU <seeds> & masks", subtitle='run "a"')
    report.heading("<script>alert(1)</script>", level=3)
    report.paragraph("a < b & c")
    page = report.render()
    assert page.startswith("<!DOCTYPE html>\n<html")
    assert page.rstrip().endswith("</html>")
    assert "<title>mIoU &lt;seeds&gt; &amp; masks</title>" in page
    assert "<h1>mIoU &lt;seeds&gt; &amp; masks</h1>" in page
    assert '<p class="subtitle">run &quot;a&quot;</p>' in page
    assert "<h3>&lt;script&gt;alert(1)&lt;/script&gt;</h3>" in page
    assert "<p>a &lt; b &amp; c</p>" in page
    assert "<script" not in page and "http" not in page and "<link" not in page
    assert page.index("<h3>") < page.index("<p>a &lt;")
    with pytest.raises(ValueError, match="level"):
        report.heading("x", level=7)


def test_table_columns_formats_and_missing_cells():
    report = HtmlReport("t")
    rows = [{"method": "CAM<1>", "miou": 0.48321, "images": 1464}, {"method": "IRN", "miou": float("nan"), "ok": True}]
    report.table(rows, caption="Seeds & masks", float_format="{:.2f}")
    table = report.render().split('<table class="data">')[1].split("</table>")[0]
    assert "<caption>Seeds &amp; masks</caption>" in table
    assert re.findall(r"<th>(.*?)</th>", table) == ["method", "miou", "images", "ok"]
    cells = re.findall(r"<tr>(.*?)</tr>", table)[1:]
    assert cells[0] == '<td>CAM&lt;1&gt;</td><td class="num">0.48</td><td class="num">1464</td><td></td>'
    assert cells[1] == '<td>IRN</td><td class="num">\u2013</td><td></td><td>True</td>'
    report.table([{"x": np.float32(0.5), "n": np.int64(3)}])
    assert '<td class="num">0.500</td><td class="num">3</td>' in report.render()
    with pytest.raises(ValueError, match="at least one row"):
        report.table([])


def test_per_class_iou_table_shows_undefined_values_as_dashes():
    report = HtmlReport("t")
    report.per_class_iou_table(["background", "cat", "dog"], [0.5, None, float("nan")], caption="IoU")
    cells = re.findall(r"<tr>(.*?)</tr>", report.render().split('<table class="data">')[1])[1:]
    assert cells == ['<td>background</td><td class="num">0.500</td>', '<td>cat</td><td class="num">\u2013</td>',
                     '<td>dog</td><td class="num">\u2013</td>']


def test_embedded_images_decode_to_the_same_pixels():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    report = HtmlReport("images")
    report.image(rgb, caption="a <cam>", width=140)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG")
    report.image(buffer.getvalue())
    page = report.render()
    decoded = embedded_images(page)
    np.testing.assert_array_equal(decoded[0], rgb)
    np.testing.assert_array_equal(decoded[1], gray)
    assert 'alt="a &lt;cam&gt;" width="140"' in page
    assert "<figcaption>a &lt;cam&gt;</figcaption>" in page
    with pytest.raises(ValueError, match="PNG"):
        report.image(b"GIF89a")
    with pytest.raises(ValueError, match="uint8"):
        report.image(np.zeros((2, 2), np.float32))


def test_gallery_grid():
    labels = np.array([[0, 1], [2, 255]], np.uint8)
    report = HtmlReport("g")
    report.gallery([[("image", np.zeros((2, 2, 3), np.uint8)), ("seed", colorize_labels(labels))],
                    [("gt & more", labels)]], caption="samples", width=96)
    page = report.render()
    gallery = page.split('<table class="gallery">')[1].split("</table>")[0]
    assert gallery.count("<tr>") == 2 and gallery.count("<img") == 3
    assert gallery.count('width="96"') == 3
    assert "<figcaption>gt &amp; more</figcaption>" in gallery
    np.testing.assert_array_equal(embedded_images(page)[1], colorize_labels(labels))


def test_line_plot_embeds_a_png_and_checks_lengths():
    report = HtmlReport("p")
    report.line_plot([0.1, 0.2, 0.3], {"mIoU": [0.4, 0.5, 0.45]}, "threshold", "mIoU", title="sweep",
                     markers={"chosen 0.20": (0.2, 0.5)})
    (plot,) = embedded_images(report.render())
    assert plot.shape == (400, 640, 4)
    assert "<figcaption>sweep</figcaption>" in report.render()
    with pytest.raises(ValueError, match="'b' has 2 values for 3"):
        report.line_plot([1, 2, 3], {"a": [1, 2, 3], "b": [1, 2]}, "x", "y")


def test_save_writes_the_rendered_page(tmp_path):
    report = HtmlReport("saved")
    report.paragraph("hello")
    report.save(tmp_path / "sub" / "report.html")
    assert (tmp_path / "sub" / "report.html").read_text(encoding="utf-8") == report.render()


def test_colorize_labels_is_exact():
    colours = colorize_labels(np.array([[0, 1], [15, 255]]))
    assert colours.dtype == np.uint8
    assert colours.tolist() == [[[0, 0, 0], [128, 0, 0]], [[192, 128, 128], [255, 255, 255]]]
    custom = colorize_labels(np.array([[1, 255]]), palette=np.array([[0, 0, 0], [1, 2, 3]]))
    assert custom.tolist() == [[[1, 2, 3], [255, 255, 255]]]
    with pytest.raises(ValueError, match="palette"):
        colorize_labels(np.array([[2]]), palette=np.array([[0, 0, 0], [1, 2, 3]]))


def test_overlay_heatmap_blends_jet_colours():
    image = np.full((1, 2, 3), 100, np.uint8)
    heat = np.array([[0.0, 1.0]])
    assert overlay_heatmap(image, heat, alpha=1.0).tolist() == [[[0, 0, 128], [128, 0, 0]]]  # jet ends
    np.testing.assert_array_equal(overlay_heatmap(image, heat, alpha=0.0), image)
    assert overlay_heatmap(image, heat, alpha=0.5).tolist() == [[[50, 50, 114], [114, 50, 50]]]
    with pytest.raises(ValueError, match="differs"):
        overlay_heatmap(image, np.zeros((2, 2)))


def test_draw_boxes_draws_inclusive_outlines_without_touching_the_input():
    image = np.zeros((20, 20, 3), np.uint8)
    out = draw_boxes(image, [(2, 3, 10, 12, "")])
    assert not image.any()
    assert out[3, 2].tolist() == [128, 0, 0] and out[12, 10].tolist() == [128, 0, 0]  # corners, VOC colour 1
    assert out[7, 6].tolist() == [0, 0, 0] and out[15, 15].tolist() == [0, 0, 0]
    labelled = draw_boxes(np.zeros((40, 60, 3), np.uint8), [(5, 20, 30, 35, "cat"), (40, 2, 55, 10, "dog")])
    assert labelled[:20, :30].any()  # the first label sits above its box
    assert labelled[2, 40].tolist() == [0, 128, 0]  # second box gets VOC colour 2
    with pytest.raises(ValueError, match="x1 < x0"):
        draw_boxes(image, [(5, 0, 1, 4, "bad")])


def test_ladder_rows_from_a_metrics_dict():
    from scarce.report.wsss import ladder_rows

    metrics = {"protocol": {"threshold_chosen_on": "val", "scored_on": "test"},
               "test": {"miou": 0.3125, "fp": 0.25, "fn": 0.125},
               "refined": {"test": {"miou": 0.40, "fp": 0.5, "fn": 0.0625}}, "masks": {"train": {"split": "train_aug", "miou": 0.5}},
               "segmentation": {"test": {"miou": 0.45}}}
    rows = ladder_rows(metrics)
    assert [(r["stage"], r["mIoU"], r["scored on"]) for r in rows] == [
        ("CAM seeds", 31.25, "test"), ("refined maps", 40.0, "test"),
        ("pseudo masks: mask mIoU (train)", 50.0, "train_aug"), ("segmentation", 45.0, "test"),
        ("fully supervised ceiling", "\u2014", "test"), ("segmentation / ceiling (%)", "\u2014", "test")]
    assert [r["threshold chosen on"] for r in rows[:3]] == ["val"] * 3
    assert [(r["FP (%)"], r["FN (%)"]) for r in rows[:3]] == [(25.0, 12.5), (50.0, 6.25), ("\u2014", "\u2014")]
    metrics["ceiling"] = {"test": {"miou": 0.6}}
    assert ladder_rows(metrics)[-1]["mIoU"] == pytest.approx(75.0)  # 45 / 60
    seeds_only = ladder_rows({"protocol": metrics["protocol"], "test": {"miou": 0.25}})
    assert [r["mIoU"] for r in seeds_only] == [25.0] + ["\u2014"] * 5


def test_single_stage_ladder_rows_from_a_metrics_dict():
    from scarce.report.singlestage import single_stage_ladder

    score = lambda miou, fp, fn: {"miou": miou, "fp": fp, "fn": fn}  # noqa: E731
    metrics = {"seeds": {"threshold": 0.5, "train_aug": score(0.5, 0.25, 0.125)}, "decoder_maps": score(0.6, 0.1, 0.2),
               "single_stage": {"val": score(0.3, 0.2, 0.4), "test": score(0.4, 0.2, 0.3)}}
    rows = single_stage_ladder(metrics, {"train": "train_aug", "val": "val", "test": "test"})
    assert [(r["mIoU"], r["FP (%)"], r["FN (%)"], r["scored on"], r["threshold chosen on"]) for r in rows] == [
        (50.0, 25.0, 12.5, "train_aug", "val"), (60.0, 10.0, 20.0, "train_aug", "\u2013"),
        (30.0, 20.0, 40.0, "val", "\u2013"), (40.0, 20.0, 30.0, "test", "\u2013"),
        ("\u2014", "\u2014", "\u2014", "val", "\u2013"), ("\u2014", "\u2014", "\u2014", "test", "\u2013")]
    assert rows[0]["stage"] == "seeds M_rs (threshold 0.50)"
