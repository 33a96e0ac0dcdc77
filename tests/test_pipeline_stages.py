"""The pipeline's stages on the tiny scenes: refinement, pseudo masks on train, skipping and resuming.

A test-only refiner (``test_square``: c → c², which sharpens maps in [0, 1]) drives the refine stage; every
score is checked against an independent computation (IRN's padded background plane for the labels and
scikit-learn's confusion matrix for the IoUs), not against the pipeline's own helpers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from scarce.cams.store import load_cam
from scarce.cli import main
from scarce.config import dump_yaml, load_yaml
from scarce.data.base import open_dataset
from scarce.errors import ConfigError, ScarceError
from scarce.io import read_json, read_label_png
from scarce.layout import RunLayout
from scarce.pipeline import STAGES, Run, RunConfig, Stage, load_run_config
from scarce.refinement import RefineContext, Refiner, RefineStep, register_refiner

TINY = {
    "model": {"backbone": "test_efficientnet", "pretrained": None},
    "train": {"epochs": 1, "batch_size": 8, "augment": {"crop_size": 64}},
    "cam": {"scales": [1.0], "batch_size": 4},
    "eval": {"gallery": 2},
}


@register_refiner("test_square")
class SquareRefiner(Refiner):
    """c → c²; remembers the contexts it was prepared with."""

    contexts: list[RefineContext] = []

    def prepare(self, context: RefineContext) -> None:
        SquareRefiner.contexts.append(context)

    def __call__(self, images, cams, keys):
        assert images.dtype.is_floating_point and float(images.max()) <= 1.0  # raw RGB in [0, 1]
        return [c ** 2 for c in cams]


def _config(root: Path, **changes) -> RunConfig:
    from scarce.config import merge

    return load_run_config(None, merge({"data": {"kind": "scenes", "root": str(root)}, **TINY}, changes))


def _labels(maps: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """IRN's rule written out: a constant background plane at t in front of the class maps, then argmax."""
    padded = np.concatenate([np.full((1, *maps.shape[1:]), threshold, np.float32), maps.astype(np.float32)])
    return np.concatenate([[0], keys + 1])[padded.argmax(axis=0)]


def _miou(preds: list[np.ndarray], gts: list[np.ndarray], num_classes: int) -> float:
    """mIoU over the classes present in prediction or ground truth, from scikit-learn's confusion matrix."""
    gt = np.concatenate([g.ravel() for g in gts])
    pred = np.concatenate([p.ravel() for p in preds])
    keep = gt != 255
    cm = confusion_matrix(gt[keep], pred[keep], labels=list(range(num_classes))).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    return float(np.mean(np.diag(cm)[union > 0] / union[union > 0]))


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("metrics.json", "timings.json", "report.html", "config.yaml")}


@pytest.fixture(scope="module")
def refined_run(tiny_scenes, tmp_path_factory):
    """A finished run with the test refiner and pseudo masks of train and test."""
    SquareRefiner.contexts.clear()
    folder = tmp_path_factory.mktemp("refined") / "run"
    cfg = _config(tiny_scenes, refine=["test_square"], eval={"mask_splits": ["train", "test"], "gallery": 2})
    metrics = Run(cfg, folder, progress=False).run()
    return folder, cfg, metrics


def test_refine_stage_threshold_protocol_and_train_masks(refined_run, tiny_scenes):
    folder, cfg, metrics = refined_run
    layout = RunLayout(folder)
    datasets = {split: open_dataset("scenes", tiny_scenes, split, allow_empty=True) for split in ("train", "val", "test")}
    num_classes = datasets["test"].num_classes + 1
    seeds_threshold = metrics["threshold"]
    # the refiner was prepared once, with the seeds' val-chosen threshold and the confident band around it
    (context,) = SquareRefiner.contexts
    assert context.threshold == seeds_threshold and context.val_split == "val"
    assert context.confident == pytest.approx((seeds_threshold + 0.1, max(seeds_threshold - 0.1, 0.0)))
    assert context.cam_dir("train") == folder / "cams" / "train" and context.work_dir == folder / "refine"
    # refined maps for every image of every split, each the square of its seed CAM
    refined: dict[str, list] = {}
    for split, dataset in datasets.items():
        assert len(dataset.samples) > 0
        refined[split] = []
        for sample in dataset.samples:
            seed, seed_keys = load_cam(folder / "cams" / split / f"{sample.stem}.npz")
            maps, keys = load_cam(folder / "refined" / split / f"{sample.stem}.npz")
            assert keys.tolist() == seed_keys.tolist() == list(sample.labels)
            np.testing.assert_allclose(maps, seed ** 2, atol=1e-3)
            refined[split].append((maps, keys, dataset.load_mask(sample)))
    # the refined threshold maximises the val mIoU of the refined maps; test is scored at it
    grid = np.round(np.arange(0.0, 1.0, 0.01), 6)
    val_curve = [_miou([_labels(m, k, t) for m, k, _ in refined["val"]], [g for *_, g in refined["val"]], num_classes)
                 for t in grid]
    chosen = metrics["refined"]["threshold"]
    assert val_curve[int(np.argmin(np.abs(grid - chosen)))] == pytest.approx(max(val_curve), abs=1e-12)
    assert metrics["refined"]["val_peak_miou"] == pytest.approx(max(val_curve), abs=1e-12)
    test_miou = _miou([_labels(m, k, chosen) for m, k, _ in refined["test"]], [g for *_, g in refined["test"]],
                      num_classes)
    assert metrics["refined"]["test"]["miou"] == pytest.approx(test_miou, abs=1e-12)
    assert metrics["refined"]["steps"] == [{"name": "test_square", "options": {}}]
    # pseudo masks of train: the refined maps at the val-chosen refined threshold, scored against train's ground truth
    expected = [_labels(m, k, chosen) for m, k, _ in refined["train"]]
    written = [read_label_png(folder / "masks" / "train" / f"{s.stem}.png") for s in datasets["train"].samples]
    for mask, labels in zip(written, expected):
        np.testing.assert_array_equal(mask, labels)
    train = metrics["masks"]["train"]
    assert (train["split"], train["maps"], train["threshold"], train["threshold_chosen_on"]) == \
        ("train", "refined", chosen, "val")
    assert train["miou"] == pytest.approx(_miou(written, [g for *_, g in refined["train"]], num_classes), abs=1e-12)
    assert train["labelled_fraction"] == 1.0
    # the seeds' keys stay where they were; metrics.json holds what run() returned; the report shows the ladder
    assert read_json(layout.metrics)["masks"]["train"]["miou"] == train["miou"]
    html = layout.report.read_text()
    assert "mask mIoU (train)" in html and "<figcaption>refined</figcaption>" in html


def test_a_second_run_skips_every_finished_stage(refined_run):
    folder, cfg, metrics = refined_run
    before = _mtimes(folder)
    contexts = len(SquareRefiner.contexts)
    again = Run(cfg, folder, progress=False).run()
    assert _mtimes(folder) == before and len(SquareRefiner.contexts) == contexts
    assert {k: again[k] for k in ("test", "refined", "masks")} == {k: metrics[k] for k in ("test", "refined", "masks")}


def test_refinement_resumes_image_by_image(refined_run, tmp_path):
    source, cfg, metrics = refined_run
    folder = tmp_path / "run"
    shutil.copytree(source, folder)
    refined_train = folder / "refined" / "train"
    files = sorted(refined_train.glob("*.npz"))
    killed, kept = files[: len(files) // 2], files[len(files) // 2:]
    contents = {p.name: load_cam(p)[0] for p in killed}
    for path in killed:  # a run killed half way through the train split: no marker, half the files
        path.unlink()
    (refined_train / "_complete").unlink()
    kept_mtimes = {p.name: p.stat().st_mtime_ns for p in kept}
    cams_mtimes = _mtimes(folder / "cams")
    again = Run(cfg, folder, progress=False).run()
    assert {p.name: p.stat().st_mtime_ns for p in kept} == kept_mtimes and _mtimes(folder / "cams") == cams_mtimes
    for path in killed:
        np.testing.assert_array_equal(load_cam(path)[0], contents[path.name])
    assert (refined_train / "_complete").is_file()
    assert again["refined"] == metrics["refined"] and again["masks"] == metrics["masks"]


def test_stage_commands_refine_and_masks_of_any_split(refined_run, tmp_path, capsys):
    source, cfg, metrics = refined_run
    folder = tmp_path / "run"
    shutil.copytree(source, folder)
    shutil.rmtree(folder / "refined")
    (folder / "scores" / "refined.json").unlink()
    assert main(["refine", str(folder), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{'refined maps':34s} {100 * metrics['refined']['test']['miou']:7.2f}" in out
    assert read_json(folder / "scores" / "refined.json") == read_json(source / "scores" / "refined.json")
    # masks of a split the config did not ask for, at the val-chosen refined threshold, scored against its ground truth
    assert main(["masks", str(folder), "--split", "val", "--quiet"]) == 0
    out = capsys.readouterr().out
    val = open_dataset("scenes", cfg.data.root, "val", allow_empty=True)
    written = [read_label_png(folder / "masks" / "val" / f"{s.stem}.png") for s in val.samples]
    expected = 100 * _miou(written, [val.load_mask(s) for s in val.samples], val.num_classes + 1)
    assert f"mask mIoU (val) {expected:.2f}" in out
    # confident masks: 255 between bg and fg, and the unlabelled pixels are left out of the score
    assert main(["masks", str(folder), "--split", "val", "--fg", "0.5", "--bg", "0.1", "--quiet"]) == 0
    confident = [read_label_png(folder / "masks" / "val" / f"{s.stem}.png") for s in val.samples]
    for mask, sample in zip(confident, val.samples):
        maps, keys = load_cam(folder / "refined" / "val" / f"{sample.stem}.npz")
        high, low = _labels(maps, keys, 0.5), _labels(maps, keys, 0.1)
        np.testing.assert_array_equal(mask, np.where(high > 0, high, np.where(low == 0, 0, 255)))
    labelled = [(m != 255) for m in confident]
    expected = 100 * _miou([m[k] for m, k in zip(confident, labelled)],
                           [val.load_mask(s)[k] for s, k in zip(val.samples, labelled)], val.num_classes + 1)
    assert f"mask mIoU (val) {expected:.2f}" in capsys.readouterr().out


SEGMENT = {"model": {"encoder": "test_efficientnet", "pretrained": None, "decoder_channels": 32},
           "train": {"epochs": 1, "batch_size": 4, "augment": {"crop_size": 64}}, "scales": [1.0], "flip": False}


def test_segment_and_ceiling_stages_train_on_the_masks_and_score_val_and_test(refined_run, tmp_path):
    """The segment stage learns from the train split's pseudo masks, the ceiling from its ground truth; both
    are scored on val and test from the PNGs they write (checked with scikit-learn), and reach the ladder."""
    source, _, metrics = refined_run
    folder = tmp_path / "run"
    shutil.copytree(source, folder)
    cfg = _config(Path(metrics["data"]["root"]), refine=["test_square"], segment=SEGMENT,
                  eval={"mask_splits": ["test"], "gallery": 2})  # train masks come from the segment stage's needs
    (folder / "config.yaml").write_text(dump_yaml(cfg))  # as if made with this config: the earlier stages are the same
    out = Run(cfg, folder, progress=False).run()
    layout = RunLayout(folder)
    assert out["masks"] == metrics["masks"]  # the finished stages were reused, train masks included
    for name, model_folder in (("segmentation", layout.segment), ("ceiling", layout.ceiling)):
        assert (model_folder / "model.pt").is_file() and (model_folder / "train_log.csv").is_file()
        for role in ("val", "test"):
            dataset = open_dataset("scenes", Path(metrics["data"]["root"]), role)
            pred = [read_label_png(layout.predictions(model_folder, role) / f"{s.stem}.png") for s in dataset.samples]
            expected = _miou(pred, [dataset.load_mask(s) for s in dataset.samples], dataset.num_classes + 1)
            assert out[name][role]["miou"] == pytest.approx(expected, abs=1e-9)
    assert "pseudo masks" in out["segmentation"]["trained_on"] and "ground-truth" in out["ceiling"]["trained_on"]
    html = (folder / "report.html").read_text()
    assert "<figcaption>segmentation</figcaption>" in html and "segmentation / ceiling" in html
    # done stages are skipped: a second run rewrites nothing
    before = _mtimes(folder)
    Run(cfg, folder, progress=False).run()
    assert _mtimes(folder) == before


def test_a_stage_reading_what_no_earlier_stage_wrote_is_refused(refined_run, tmp_path):
    source, cfg, _ = refined_run
    folder = tmp_path / "run"
    shutil.copytree(source, folder)
    orphan = Stage("orphan", lambda run: None, reads=lambda run: [run.layout.ceiling],
                   writes=lambda run: [run.layout.ceiling])
    with pytest.raises(ScarceError, match=r"stage 'orphan' reads .*ceiling"):
        Run(cfg, folder, progress=False, stages=[*STAGES[:-1], orphan]).run()


def test_empty_val_split_is_a_clear_error_before_training(tmp_path):
    cfg = load_run_config(None, {**TINY, "data": {"scenes": {"n": 10, "image_size": 32, "subset": True,
                                                              "split_fractions": [0.8, 0.0, 0.2]}}})
    with pytest.raises(ScarceError, match=r"split 'val' has no images") as err:
        Run(cfg, tmp_path / "run", progress=False).run()
    assert str(tmp_path / "run" / "data") in str(err.value)
    assert not (tmp_path / "run" / "train" / "model.pt").exists()


def test_refine_config_accepts_names_and_mappings(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("refine: [pamr, {name: crf, options: {iterations: 5}}]\neval: {mask_splits: [train]}\n")
    cfg = load_run_config(path)
    assert cfg.refine == (RefineStep("pamr"), RefineStep("crf", {"iterations": 5}))
    assert cfg.eval.mask_splits == ("train",)
    (tmp_path / "dumped.yaml").write_text(dump_yaml(cfg))
    assert load_yaml(tmp_path / "dumped.yaml")["refine"] == [{"name": "pamr", "options": {}},
                                                             {"name": "crf", "options": {"iterations": 5}}]
    assert load_run_config(tmp_path / "dumped.yaml") == cfg
    assert load_run_config(None).refine == ()  # no refiners: the seeds are the masks' maps, as before
    with pytest.raises(ConfigError, match=r"refine: unknown key\(s\) option"):
        load_run_config(None, {"refine": [{"name": "crf", "option": {}}]})
    with pytest.raises(ConfigError, match="mask_splits"):
        load_run_config(None, {"eval": {"mask_splits": ["training"]}})


def test_refine_command_without_refiners_names_the_setting(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text(dump_yaml(load_run_config(None)))
    assert main(["refine", str(folder)]) == 1
    assert "refine: [pamr]" in capsys.readouterr().err


def test_bad_pseudo_mask_files_name_the_file(refined_run, tmp_path):
    from scarce.errors import DataError
    from scarce.io import save_label_png

    source, cfg, _ = refined_run
    folder = tmp_path / "run"
    shutil.copytree(source, folder)
    run = Run(cfg, folder, progress=False)
    first = sorted((folder / "masks" / "train").glob("*.png"))[0]
    for bad, problem in ((np.zeros((8, 8), np.uint8), "shape"), (np.full((64, 64), 200, np.uint8), "labels")):
        save_label_png(first, bad)
        with pytest.raises(DataError, match=f"{first.name}.*{problem}"):
            run.score_masks("train")
    first.unlink()
    with pytest.raises(DataError, match=f"{first.name}: label file not found"):
        run.score_masks("train")


def test_masks_rewritten_by_hand_make_the_masks_stage_run_again(refined_run, tmp_path):
    source, cfg, metrics = refined_run
    folder = tmp_path / "run"
    shutil.copytree(source, folder)
    run = Run(cfg, folder, progress=False)
    run.pseudo_masks("train", 0.9)  # another threshold than the val-chosen one
    assert not (folder / "scores" / "masks.json").exists()
    assert metrics["refined"]["threshold"] != 0.9
    again = Run(cfg, folder, progress=False).run()
    assert again["masks"] == metrics["masks"]  # back to the val-chosen threshold, with its scores
    assert read_json(folder / "masks" / "train" / "_source.json")["threshold"] == metrics["refined"]["threshold"]
    for png in (source / "masks" / "train").glob("*.png"):
        np.testing.assert_array_equal(read_label_png(folder / "masks" / "train" / png.name), read_label_png(png))
