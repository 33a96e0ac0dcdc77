"""The single-stage run end to end on 24 tiny scenes: a killed training resumes to identical weights, and the
CLI trains, scores single- and multi-stage and writes pseudo masks."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from scarce.cli import main
from scarce.errors import ConfigError
from scarce.io import read_label_png
from scarce.segmentation import predict_probabilities
from scarce.singlestage import SingleStageRun, load_config
from scarce.singlestage.network import DecoderView
from scarce.training import to_tensor

TINY = {
    "network": {"encoder": {"backbone": "test_efficientnet", "pretrained": None}, "decoder": {"channels": 16}},
    "train": {"epochs": 3, "batch_size": 4, "augment": {"crop_size": 64}},
    "recurseed": {"seed_start_epoch": 1, "pamr": {"dilations": [1, 2], "iterations": 2}},  # a fast PAMR
    "mix": {"kind": "epm", "start_epoch": 2},
    "infer": {"scales": [1.0], "flip": False},
}


class Killed(Exception):
    pass


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these many small convolutions run ~10× slower with two threads on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(root, **changes):
    return load_config(None, {**TINY, "data": {"kind": "scenes", "root": str(root)}, **changes})


def test_a_killed_run_resumes_to_identical_weights(tiny_scenes, tmp_path):
    cfg = tiny_config(tiny_scenes)
    whole = SingleStageRun(cfg, tmp_path / "whole", progress=False).train()

    def kill(epoch: int, step: int) -> None:
        if step == 7:  # inside the last epoch, after mixing has begun
            raise Killed

    with pytest.raises(Killed):
        SingleStageRun(cfg, tmp_path / "killed", progress=False).train(on_step=kill)
    resumed = SingleStageRun(cfg, tmp_path / "killed", progress=False).train(resume=True)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with open(tmp_path / "whole" / "train" / "train_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # epoch 1: L_cls only; epoch 2: + RecurSeed's L_seg and L_rec; epoch 3: + the mixed losses
    assert [bool(row["seg"]) for row in rows] == [False, True, True]
    assert [bool(row["seg_mix"]) for row in rows] == [False, False, True]


def test_cli_runs_single_and_multi_stage(tiny_scenes, tmp_path, capsys):
    out = tmp_path / "run"
    sets = ["network.encoder.backbone=test_efficientnet", "network.encoder.pretrained=null",
            "network.decoder.channels=16", "train.epochs=1", "train.batch_size=4", "train.augment.crop_size=64",
            "mix.kind=cutmix", "mix.start_epoch=0", "recurseed.pamr={dilations: [1], iterations: 1}", "infer.scales=[1.0]", "infer.flip=false",
            f"data.root={tiny_scenes}"]
    multi = ["multi_stage=true", "segment.model.encoder=test_efficientnet", "segment.model.pretrained=null",
             "segment.model.decoder_channels=16", "segment.train.epochs=1", "segment.train.batch_size=4",
             "segment.train.augment.crop_size=64", "segment.scales=[1.0]", "segment.flip=false"]
    # `scarce run` dispatches on the config's `pipeline: single_stage` (`scarce recurseed run` is the same command)
    args = ["run", "configs/recurseed/rs.yaml", "--out", str(out), "--quiet"]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    single = json.loads((out / "metrics.json").read_text())
    assert "multi_stage" not in single
    checkpoint = (out / "train" / "model.pt").stat().st_mtime_ns
    # the finished single-stage run adds the multi-stage route: nothing computed before is redone or changed
    assert main(args + ["--resume"] + [x for s in sets + multi for x in ("--set", s)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "train" / "model.pt").stat().st_mtime_ns == checkpoint
    assert metrics["single_stage"] == single["single_stage"] and metrics["seeds"] == single["seeds"]
    for route, splits in (("single_stage", ("val", "test")), ("multi_stage", ("pseudo_masks_train", "val", "test"))):
        for split in splits:
            assert 0.0 <= metrics[route][split]["miou"] <= 1.0
    assert "single_stage" in capsys.readouterr().out
    masks = sorted((out / "pseudo" / "train").glob("*.png"))
    assert masks and set(read_label_png(masks[0]).ravel().tolist()) <= set(range(11))
    # the report: the ladder with the run's own figures, the losses and a gallery with both routes' predictions
    report = (out / "report.html").read_text()
    assert f"{100 * metrics['single_stage']['test']['miou']:.1f}" in report
    assert f"{100 * metrics['multi_stage']['test']['miou']:.1f}" in report
    assert "seeds M_rs" in report and "Training losses" in report
    assert report.count("data:image/png") >= 1 + 6 * 4  # the loss plot, then 6 columns for the 4 test scenes
    assert (out / "segment" / "pred" / "test").is_dir()
    args[0:1] = ["recurseed", "run"]
    assert main(args + [x for s in sets + multi for x in ("--set", s)] + ["--set", "train.epochs=2"]) == 1
    # once the segmentation model exists, its settings are fixed too
    assert main(args + [x for s in sets + multi for x in ("--set", s)] + ["--set", "segment.train.epochs=2"]) == 1
    assert "segment.train.epochs" in capsys.readouterr().err


def test_bad_settings_fail_at_once():
    with pytest.raises(ConfigError, match="pipeline"):
        load_config(None, {"pipeline": "cams"})
    with pytest.raises(ConfigError, match="mix.kind"):
        load_config(None, {"mix": {"kind": "mixup"}})
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(None, {"mix": {"kind": "epm"}, "train": {"batch_size": 1}})
    with pytest.raises(ConfigError, match="crop_size"):
        load_config(None, {"train": {"augment": {"crop_size": 100}}})


@pytest.mark.parametrize("threshold, all_classes", [(0.34, True), (0.6, False), (None, True)])
def test_inference_restricts_the_argmax_to_the_allowed_classes(tiny_scenes, tmp_path, threshold, all_classes):
    cfg = tiny_config(tiny_scenes, infer={"scales": [1.0], "flip": False, "class_threshold": threshold})
    run = SingleStageRun(cfg, tmp_path, progress=False)
    net = run.build(10)[0].eval()  # untrained; the zero-initialised CAM head scores σ(0) = 0.5 for every class
    torch.nn.init.normal_(net.segmentation_head[0].weight, std=30.0)  # a decoder whose argmax varies over the image
    view = DecoderView(net)
    dataset = run.dataset("val")
    image = dataset.load_image(dataset.samples[0])
    with torch.no_grad():
        probabilities = predict_probabilities(view, to_tensor(image, net.mean_std), [1.0], False).numpy()
        view.take_class_scores()
        only_three = run.predict(view, image, [3], None)
        filtered = run.predict(view, image, None, None)
    assert np.array_equal(only_three, np.where(probabilities[4] > probabilities[0], 4, 0))  # ties go to background
    expected = probabilities.argmax(axis=0) if all_classes else np.zeros(image.shape[:2])  # 0.5 ≥ 0.34, not ≥ 0.6
    assert np.array_equal(filtered, expected) and len(np.unique(probabilities.argmax(axis=0))) > 2


def test_timings_survive_a_rerun_that_skips_every_stage(tmp_path):
    """A finished run re-invoked (e.g. for its report) must keep the training time it recorded, including a run
    made before timings.json existed, whose times sat only in metrics.json."""
    (tmp_path / "metrics.json").write_text(json.dumps({"timings_s": {"train": 12.5}}))
    run = SingleStageRun(load_config(None), tmp_path, progress=False)
    assert run.stored_timings() == {"train": 12.5}
    run.record_time("single_stage_inference", 3.0)
    stored = json.loads((tmp_path / "timings.json").read_text())
    assert stored == {"train": 12.5, "single_stage_inference": 3.0}


def test_a_scored_split_without_ground_truth_is_named_before_inference(tiny_scenes, tmp_path):
    import shutil

    from scarce.errors import ScarceError

    data = tmp_path / "data"
    shutil.copytree(tiny_scenes, data)
    shutil.rmtree(data / "SegmentationClass")  # the VOC layout's ground-truth folder: no split has masks now
    run = SingleStageRun(tiny_config(data), tmp_path / "run", progress=False)
    with pytest.raises(ScarceError, match="'val' has no ground-truth"):
        run.single_stage(run.build(10)[0].eval())
    assert not (tmp_path / "run" / "predictions").exists()


@pytest.mark.parametrize("name", ["rs", "rs_cutmix", "rs_classmix", "rs_epm"])
def test_the_recurseed_configs_generate_the_ladders_scenes(name):
    """The tables set single stage against the ladder: the same seed must give the same images. (The benchmark
    commands' ``--set data.scenes.seed=1`` once rebuilt the scenes config from the class defaults: 160 px.)"""
    from scarce.config import load_yaml, parse_overrides
    from scarce.pipeline import load_run_config

    seed_one = parse_overrides(["data.scenes.seed=1"])
    ladder = load_run_config("configs/methods/base.yaml", seed_one).data.scenes
    assert ladder.seed == 1 and ladder.image_size == 128
    assert load_config(f"configs/recurseed/{name}.yaml", seed_one).data.scenes == ladder
    assert load_yaml("configs/recurseed/rs.yaml")["train"]["augment"]["crop_size"] == ladder.image_size
