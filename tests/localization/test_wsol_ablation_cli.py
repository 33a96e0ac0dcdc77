"""The ablation and the WSOL commands end to end on the tiny scenes benchmark with a tiny timm model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scarce.cams.store import load_cam
from scarce.cli import build_parser, main
from scarce.errors import ScarceError
from scarce.localization.ablation import METRICS, VARIANTS, run_ablation
from scarce.config import resolve


def overrides(root):
    return [f"data_root={root}", "seeds=[0]", "model.backbone=test_efficientnet", "model.pretrained=null",
            "train.epochs=1", "train.batch_size=8", "train.augment.crop_size=64", "metrics.interval=0.1"]


@pytest.fixture(scope="module")
def ablation(tiny_scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    code = main(["wsol-ablation", "--out", str(out), "--quiet", *sum((["--set", o] for o in overrides(tiny_scenes)), [])])
    assert code == 0
    return out


def test_commands_are_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"localize", "wsol-eval", "wsol-ablation"} <= set(sub.choices)


def test_ablation_writes_the_four_variants_under_the_protocol(ablation):
    summary = json.loads((ablation / "ablation.json").read_text())
    assert [row["variant"] for row in summary["test"]] == [v.name for v in VARIANTS]
    for which in ("test", "oracle"):
        for row in summary[which]:
            for metric in METRICS:
                assert 0.0 <= row[metric] <= 1.0 and row[f"{metric}_std"] == 0.0
    seed = summary["per_seed"][0]["variants"]["+PaS"]
    assert "chosen on the held-out split" in seed["protocol"] and set(seed["thresholds"]) == {
        "MaxBoxAccV1", "MaxBoxAccV2", "PeakIoU"}
    # oracle = best threshold on test: never below the score at val's thresholds
    for variant in summary["per_seed"][0]["variants"].values():
        for metric in ("MaxBoxAccV1", "MaxBoxAccV2", "PeakIoU"):
            assert variant["oracle"][metric] >= variant["test"][metric] - 1e-12
    table = (ablation / "ablation.md").read_text()
    assert "| +TAP |" in table and "Oracle" in table and "mean ± std over 1 seeds" in table
    assert "pooling: tap" in (ablation / "seed0" / "tap" / "config.yaml").read_text()
    assert "pooling: gap" in (ablation / "seed0" / "gap" / "config.yaml").read_text()


def test_nwc_changes_the_maps_and_reruns_are_cached(ablation, tiny_scenes):
    pas, nwc = ablation / "seed0" / "cams" / "pas" / "test", ablation / "seed0" / "cams" / "nwc" / "test"
    files = sorted(p.name for p in pas.glob("*.npz"))
    assert files and files == sorted(p.name for p in nwc.glob("*.npz"))
    assert any(not np.array_equal(load_cam(pas / f)[0], load_cam(nwc / f)[0]) for f in files)
    model = ablation / "seed0" / "gap" / "train" / "model.pt"
    stamp = model.stat().st_mtime_ns
    from scarce.localization.ablation import AblationConfig

    cfg = resolve(AblationConfig, None, overrides(tiny_scenes))
    again = run_ablation(cfg, ablation, progress=False, log=lambda _: None)
    assert model.stat().st_mtime_ns == stamp
    assert again["test"] == json.loads((ablation / "ablation.json").read_text())["test"]
    with pytest.raises(ScarceError, match="another configuration"):
        run_ablation(resolve(AblationConfig, None, [*overrides(tiny_scenes), "percentile=90"]), ablation, progress=False)


def test_wsol_eval_command(ablation, tiny_scenes, tmp_path, capsys):
    code = main(["wsol-eval", "--dataset", "scenes", "--root", str(tiny_scenes), "--checkpoint",
                 str(ablation / "seed0" / "gap" / "train" / "model.pt"), "--model", "test_efficientnet",
                 "--nwc", "--pas", "--interval", "0.1", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    scores = json.loads((tmp_path / "wsol_metrics.json").read_text())
    assert set(scores) == {"protocol", "thresholds", "test", "oracle"}
    assert {"MaxBoxAccV1", "MaxBoxAccV2", "PxAP", "PeakIoU", "Top1Loc"} <= set(scores["test"])
    assert "oracle" in capsys.readouterr().out
    # its CAMs are reused on a rerun, so other CAM settings in the same folder are refused
    rerun = ["wsol-eval", "--dataset", "scenes", "--root", str(tiny_scenes), "--checkpoint",
             str(ablation / "seed0" / "gap" / "train" / "model.pt"), "--model", "test_efficientnet",
             "--interval", "0.1", "--out", str(tmp_path), "--quiet"]
    assert main(rerun) == 1
    assert "other settings" in capsys.readouterr().err


def test_summary_means_and_stds_by_hand_and_an_undefined_seed_stays_undefined():
    from scarce.localization.ablation import summarize

    def seed(pxap):  # PxAP is undefined (null in a re-read results.json) for a split without object pixels
        return {"variants": {v.name: {"test": {"MaxBoxAccV2": 0.5 + i / 10, "PxAP": pxap}}
                             for i, v in enumerate(VARIANTS)}}

    rows = summarize([seed(0.25), seed(0.75)])
    assert rows[1]["MaxBoxAccV2"] == pytest.approx(0.6) and rows[1]["MaxBoxAccV2_std"] == pytest.approx(0.0)
    assert rows[0]["PxAP"] == pytest.approx(0.5) and rows[0]["PxAP_std"] == pytest.approx(0.5 ** 0.5 * 0.5)
    undefined = summarize([seed(0.25), seed(None)])
    assert np.isnan(undefined[0]["PxAP"]) and undefined[0]["MaxBoxAccV2"] == pytest.approx(0.5)
