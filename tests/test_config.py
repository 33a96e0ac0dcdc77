"""YAML configs: ``base:`` chains (a variant states only what it changes), overrides and their errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scarce.config import load_yaml, merge, parse_overrides
from scarce.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_chain_merges_deeply_with_the_nearest_file_winning(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "data: {scenes: {n: 600, image_size: 128}}\ntrain: {epochs: 8, lr: 0.01}\n")
    write(tmp_path / "variants" / "mid.yaml", "base: ../base.yaml\ntrain: {epochs: 4}\n")
    leaf = write(tmp_path / "variants" / "leaf.yaml", "base: mid.yaml\ndata: {scenes: {image_size: 256}}\n")
    assert load_yaml(leaf) == {"data": {"scenes": {"n": 600, "image_size": 256}}, "train": {"epochs": 4, "lr": 0.01}}
    assert merge(load_yaml(leaf), parse_overrides(["train.lr=0.1"]))["train"] == {"epochs": 4, "lr": 0.1}


def test_base_chain_errors_name_the_file(tmp_path: Path) -> None:
    first = write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="form a cycle"):
        load_yaml(first)
    wrong = write(tmp_path / "c.yaml", "base: [a.yaml]\n")
    with pytest.raises(ConfigError, match="c.yaml: 'base' must be a file path"):
        load_yaml(wrong)
    missing = write(tmp_path / "d.yaml", "base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml: config file not found"):
        load_yaml(missing)


def test_changed_keys_names_the_dotted_keys_that_differ():
    from dataclasses import dataclass, field

    from scarce.config import changed_keys

    @dataclass
    class Inner:
        size: int = 1
        scales: tuple[float, ...] = (1.0,)

    @dataclass
    class Outer:
        root: str = "a"
        inner: Inner = field(default_factory=Inner)
        options: dict = field(default_factory=dict)

    same = Outer(inner=Inner(scales=(1.0,)))
    assert changed_keys(Outer(), same) == []
    other = Outer(root="b", inner=Inner(size=2, scales=(1.0, 0.5)), options={"logits": "classifier"})
    assert changed_keys(Outer(), other) == ["inner.scales", "inner.size", "options.logits", "root"]
    assert changed_keys(Outer(), other, ignore=("root", "options.logits")) == ["inner.scales", "inner.size"]
    # a config stored as a plain dict (a checkpoint's to_dict) compares with the dataclass, tuples as lists
    stored = {"root": "a", "inner": {"size": 1, "scales": [1.0]}, "options": {}}
    assert changed_keys(stored, Outer()) == []
    assert changed_keys(stored, other) == ["inner.scales", "inner.size", "options.logits", "root"]


@dataclass(frozen=True)
class _Scenes:
    seed: int = 0
    size: int = 160
    scales: tuple[float, ...] = (1.0,)


@dataclass(frozen=True)
class _Data:  # module level: the type hints are strings (``from __future__ import annotations``)
    scenes: _Scenes = field(default_factory=lambda: _Scenes(size=128, scales=(0.5, 1.0)))
    plain: _Scenes = field(default_factory=_Scenes)
    fixed: _Scenes = _Scenes(size=64)


def test_a_partial_mapping_changes_the_fields_own_default_not_the_class_defaults() -> None:
    from scarce.config import from_dict

    Scenes, Data = _Scenes, _Data
    data = from_dict(Data, {"scenes": {"seed": 1}, "plain": {"seed": 2}, "fixed": {"seed": 3}})
    assert data.scenes == Scenes(seed=1, size=128, scales=(0.5, 1.0))  # by hand: only the seed changes
    assert data.plain == Scenes(seed=2) and data.fixed == Scenes(seed=3, size=64)
    assert from_dict(Data, {"scenes": {"size": 96, "scales": [2.0]}}).scenes == Scenes(size=96, scales=(2.0,))
    assert from_dict(Data, {}).scenes == Scenes(size=128, scales=(0.5, 1.0))


def test_store_run_config_frees_only_the_named_keys_and_prefixes(tmp_path: Path) -> None:
    from scarce.config import store_run_config
    from scarce.errors import ScarceError

    path = tmp_path / "config.yaml"
    store_run_config(path, {"train": {"epochs": 3}, "segment": {"epochs": 1}, "multi_stage": False}, load_yaml)
    later = {"train": {"epochs": 3}, "segment": {"epochs": 120}, "multi_stage": True}
    with pytest.raises(ScarceError, match=r"multi_stage, segment\.epochs differ"):
        store_run_config(path, later, load_yaml)
    with pytest.raises(ScarceError, match=r"\(segment\.epochs differ"):
        store_run_config(path, later, load_yaml, may_change=("multi_stage", "segment"))  # "segment" is one key
    store_run_config(path, later, load_yaml, may_change=("multi_stage", "segment."))
    assert load_yaml(path) == later  # the new values are stored
    with pytest.raises(ScarceError, match=r"train\.epochs differ"):
        store_run_config(path, {**later, "train": {"epochs": 4}}, load_yaml, may_change=("multi_stage", "segment."))


@pytest.mark.parametrize("overrides, message", [
    (["train.batch_size=0"], "train.batch_size: must be >= 1, got 0"),
    (["train.lr=-1"], "train.lr: must be > 0, got -1.0"),
    (["train.epochs=0"], "train.epochs: must be >= 1, got 0"),
    (["train.augment.scale_range=[1.3, 0.7]"], r"train.augment.scale_range: must be \[low, high\] with 0 < low <= high"),
    (["cam.scales=[0]"], r"cam.scales: must be a non-empty list, each > 0, got \[0.0\]"),
    (["cam.scales=[]"], r"cam.scales: must be a non-empty list, each > 0, got \[\]"),
    (["cam.batch_size=-3"], "cam.batch_size: must be >= 1, got -3"),
    (["cam.percentile=0"], r"cam.percentile: must be in \(0, 100\], got 0.0"),
    (["eval.threshold_step=0"], r"eval.threshold_step: must be in \(0, 1\), got 0.0"),
    (["eval.mask_mode=confidnet"], "eval.mask_mode: must be one of threshold, confident, got 'confidnet'"),
    (["eval.mask_splits=[trian]"], r"eval.mask_splits: must be a list of distinct items of train, val, test, got \['trian'\]"),
    (["eval.mask_splits=[test,test]"], "eval.mask_splits: must be a list of distinct items"),
    (["data.scenes.n=0"], "scenes: n must be >= 1, got 0"),
])
def test_out_of_range_run_config_values_name_the_key_and_value(overrides, message):
    from scarce.pipeline import load_run_config

    with pytest.raises(ConfigError, match=f"^{message}"):
        load_run_config(None, parse_overrides(overrides))


def test_localization_configs_are_range_checked():
    from scarce.config import from_dict
    from scarce.localization.ablation import AblationConfig
    from scarce.localization.localize import LocalizeConfig

    with pytest.raises(ConfigError, match=r"^metrics.interval: must be in \(0, 1\), got 0.0"):
        from_dict(AblationConfig, {"metrics": {"interval": 0}})
    with pytest.raises(ConfigError, match=r"^tap_lr: must be null or > 0, got -0.1"):
        from_dict(AblationConfig, {"tap_lr": -0.1})
    assert from_dict(AblationConfig, {"tap_lr": None}).tap_lr is None
    with pytest.raises(ConfigError, match=r"^seeds: must be a non-empty list, each >= 0, got \[\]"):
        from_dict(AblationConfig, {"seeds": []})
    with pytest.raises(ConfigError, match=r"^top_k: must be >= 1, got 0"):  # built in code (the CLI) too
        LocalizeConfig(top_k=0)
    with pytest.raises(ConfigError, match=r"^threshold: must be in \[0, 1\), got 1.0"):
        LocalizeConfig(threshold=1.0)


def test_every_range_names_a_real_field_and_every_default_is_in_range():
    import dataclasses
    import importlib

    from scarce.config import RANGES, check_ranges

    for qualified, rules in RANGES.items():
        module, name = qualified.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        assert set(rules) <= {f.name for f in dataclasses.fields(cls)}, qualified
        check_ranges(cls())
