"""One command-line style: usage lines name the command, --quiet switches progress bars off, configs are
positional, --num-classes counts object classes, and localize says which CAM methods it takes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scarce.cli import build_parser, main, optional_config

NO_LONG_WORK = {"eval-masks", "cil"}  # no progress bar to switch off (cil only groups run/compare)


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[path + (name,)] = sub
                found.update(leaf_commands(sub, path + (name,)))
    return found


def test_every_usage_line_names_its_command_and_long_commands_take_quiet(capsys):
    commands = leaf_commands(build_parser())
    assert {("compare",), ("demo",), ("localize",), ("cil", "run")} <= set(commands)
    for path, parser in commands.items():
        usage = parser.format_usage()
        assert usage.startswith(f"usage: scarce {' '.join(path)} "), usage
        has_children = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        if not has_children and path[0] not in NO_LONG_WORK and path != ("data",):
            assert "--quiet" in parser._option_string_actions, path
            assert "--progress" not in parser._option_string_actions, path
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert capsys.readouterr().out.startswith("usage: scarce compare ")


def test_demo_and_ablation_take_the_config_positionally_and_still_read_config(tmp_path, capsys):
    parser = build_parser()
    for command in ("demo", "wsol-ablation"):
        args = parser.parse_args([command, "a.yaml"])
        assert optional_config(args) == Path("a.yaml")
        args = parser.parse_args([command, "--config", "b.yaml"])
        assert optional_config(args) == Path("b.yaml")
        assert "--config is deprecated" in capsys.readouterr().err
        assert optional_config(parser.parse_args([command])) is None
    assert main(["demo", "a.yaml", "--config", "b.yaml", "--out", str(tmp_path)]) == 1
    assert "give the config once" in capsys.readouterr().err


def test_eval_masks_num_classes_counts_object_classes(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    labels = np.array([[0, 1], [1, 1]], np.uint8)
    Image.fromarray(labels).save(pred / "a.png")
    Image.fromarray(labels).save(gt / "a.png")
    out = tmp_path / "scores.json"
    assert main(["eval-masks", "--pred", str(pred), "--gt", str(gt), "--num-classes", "2", "--out", str(out)]) == 0
    scores = json.loads(out.read_text(), parse_constant=lambda token: pytest.fail(f"{token} is not JSON"))
    assert scores["num_classes"] == 3  # background + 2 object classes, the second absent from both files
    assert scores["iou"] == [1.0, 1.0, None]  # undefined for the absent class: null in strict JSON


def test_localize_offers_exactly_the_methods_that_need_no_training_data():
    from scarce.cli.localization import LOCALIZE_METHODS
    from scarce.localization.localize import localizable_methods

    assert LOCALIZE_METHODS == localizable_methods() == ("advcam", "cam", "gradcam")


@pytest.fixture
def tiny_checkpoint(tmp_path):
    from scarce.models import ModelConfig, build_classifier

    torch.manual_seed(0)
    model = build_classifier(ModelConfig(backbone="test_efficientnet", pretrained=None), 2)
    torch.save({"model": model.state_dict(), "fingerprint": {"classes": ["ant", "bee"]}}, tmp_path / "model.pt")
    return tmp_path / "model.pt"


def test_localize_refuses_methods_that_need_training_data_by_name(tiny_checkpoint):
    from scarce.errors import ConfigError
    from scarce.localization.localize import LocalizeConfig, Localizer, load_model

    cfg = LocalizeConfig(model="test_efficientnet", weights=str(tiny_checkpoint), method="lpcam")
    with pytest.raises(ConfigError, match="'lpcam' needs training data .*; localize accepts advcam, cam, gradcam"):
        Localizer(cfg, load_model(cfg))
    with pytest.raises(ConfigError, match="'nope' is not a registered CAM method"):
        Localizer(LocalizeConfig(method="nope"), load_model(cfg))


def test_localize_advcam_and_a_decompression_bomb_is_skipped_and_reported(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(photos / "small.png")
    Image.fromarray(rng.integers(0, 255, (60, 60, 3), dtype=np.uint8)).save(photos / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 3600 pixels > 2 × 1000: Pillow refuses bomb.png
    out = tmp_path / "out"
    code = main(["localize", str(photos), "--model", "test_efficientnet", "--weights", str(tiny_checkpoint),
                 "--method", "advcam", "--input-size", "24", "--top-k", "1", "--out", str(out), "--quiet"])
    assert code == 1  # a file was skipped; the rest was written
    result = json.loads((out / "localization.json").read_text())
    assert [Path(image["file_name"]).name for image in result["images"]] == ["small.png"]
    assert result["info"]["method"] == "advcam"
    (skipped,) = result["skipped"]
    assert Path(skipped["file_name"]).name == "bomb.png" and "DecompressionBombError" in skipped["error"]
    assert "skipped" in capsys.readouterr().err
