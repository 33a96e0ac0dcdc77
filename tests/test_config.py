"""YAML configs: ``base:`` chains (a variant states only what it changes), overrides and their errors."""

from __future__ import annotations

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
