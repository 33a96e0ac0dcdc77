"""Typed configuration: dataclass defaults, then a YAML file, then ``key.sub=value`` overrides.

Every run folder stores the resolved configuration so that a number can be traced to its settings.
Unknown keys are errors (a typo must not silently fall back to a default), and so are values out of range
(:data:`RANGES`: ``train.batch_size=0`` fails when the config is read, not epochs later).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from scarce.errors import ConfigError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a config value must be: ``test(value)`` holds; ``requirement`` completes "must be ..."."""

    test: Callable[[Any], bool]
    requirement: str


def at_least(low: float) -> Rule:
    return Rule(lambda v: v >= low, f">= {low}")


def above(low: float) -> Rule:
    return Rule(lambda v: v > low, f"> {low}")


def within(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Rule:
    def test(v: Any) -> bool:
        return (low < v if low_open else low <= v) and (v < high if high_open else v <= high)

    return Rule(test, f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, f"one of {', '.join(choices)}")


def each(rule: Rule) -> Rule:
    """A non-empty list whose every item obeys ``rule``."""
    return Rule(lambda v: len(v) > 0 and all(rule.test(x) for x in v), f"a non-empty list, each {rule.requirement}")


def subset_of(*choices: str) -> Rule:
    """A list (possibly empty) of distinct items from ``choices``."""
    return Rule(lambda v: len(set(v)) == len(v) and set(v) <= set(choices), f"a list of distinct items of {', '.join(choices)}")


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.test(v), f"null or {rule.requirement}")


ORDERED_POSITIVE_PAIR = Rule(lambda v: len(v) == 2 and 0 < v[0] <= v[1], "[low, high] with 0 < low <= high")
PERCENTILE = within(0, 100, low_open=True)
FRACTION = within(0, 1, high_open=True)

# The ranges of the typed configs, by class ("module.Class"), in one place: `from_dict` checks every config it
# builds against them, and a config class may call `check_ranges(self)` in ``__post_init__`` to be checked
# when built in code too. (Cross-field rules stay with their class, e.g. ScenesConfig's.)
RANGES: dict[str, dict[str, Rule]] = {
    "scarce.training.trainer.TrainConfig": {
        "epochs": at_least(1), "batch_size": at_least(1), "lr": above(0), "head_lr_mult": above(0),
        "weight_decay": at_least(0), "momentum": FRACTION, "poly_power": at_least(0), "num_workers": at_least(0),
        "seed": at_least(0), "checkpoint_every": at_least(0),
    },
    "scarce.training.transforms.AugmentConfig": {"crop_size": at_least(1), "scale_range": ORDERED_POSITIVE_PAIR},
    "scarce.cams.base.CamConfig": {"scales": each(above(0)), "percentile": PERCENTILE, "batch_size": at_least(1)},
    "scarce.pipeline.EvalConfig": {
        "threshold_step": within(0, 1, low_open=True, high_open=True), "fg_margin": FRACTION,
        "bg_margin": FRACTION, "mask_mode": one_of("threshold", "confident"), "gallery": at_least(0),
        "mask_splits": subset_of("train", "val", "test"),
    },
    "scarce.models.classifier.ModelConfig": {"tap_tau": above(0)},
    "scarce.cil.config.RMMConfig": {
        "old_rates": each(FRACTION), "class_factors": each(above(0)), "episodes": at_least(1),
        "pseudo_base": within(0, 1, low_open=True, high_open=True), "pseudo_phases": optional(at_least(1)),
        "val_fraction": within(0, 1, low_open=True, high_open=True), "pseudo_epochs": optional(at_least(1)),
        "pseudo_train_per_class": optional(at_least(2)), "hidden": at_least(1), "lr": above(0),
        "baseline_momentum": FRACTION,
    },
    "scarce.localization.evaluate.WsolMetricsConfig": {
        "interval": within(0, 1, low_open=True, high_open=True), "iou_thresholds": each(within(0, 1, low_open=True)),
    },
    "scarce.localization.ablation.AblationConfig": {
        "seeds": each(at_least(0)), "percentile": PERCENTILE, "tap_tau": above(0), "tap_lr": optional(above(0)),
    },
    "scarce.localization.localize.LocalizeConfig": {
        "top_k": at_least(1), "percentile": PERCENTILE, "threshold": FRACTION, "input_size": at_least(1),
        "max_side": at_least(1), "scales": each(above(0)), "report_side": at_least(1),
    },
}


def check_ranges(config: Any, where: str = "") -> None:
    """Raise :class:`ConfigError` naming the first value of dataclass ``config`` outside its range in :data:`RANGES`."""
    cls = type(config)
    for name, rule in RANGES.get(f"{cls.__module__}.{cls.__qualname__}", {}).items():
        value = getattr(config, name)
        try:
            ok = bool(rule.test(value))
        except TypeError:  # e.g. None where a number is needed
            ok = False
        if not ok:
            raise ConfigError(f"{where + '.' if where else ''}{name}: must be {rule.requirement}, got {_plain(value)!r}")


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping in a YAML file, on top of the file its ``base:`` key names (a path relative to it), if any.

    A variant config then states only what it changes (``base: ../base.yaml`` plus the changed keys), so
    it cannot drift from the config it varies.
    """
    path = Path(path)
    data = _read_mapping(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a file path, got {base!r}")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'base' files form a cycle")
    return merge(load_yaml(path.parent / base, _seen + (path.resolve(),)), data)


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Turn ``["train.epochs=3", "model.name=resnet18"]`` into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclasses and checking keys."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = _default(fields[name])
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            # a partial mapping changes the field's own default (``data.scenes.seed=1`` keeps the 128 px that
            # DataConfig chose), not the nested class's defaults
            value = merge(to_dict(default), value)
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
    config = cls(**kwargs)
    check_ranges(config, where)
    return config


def _default(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        shorthand = getattr(tp, "config_shorthand", None)  # e.g. ``refine: [pamr]`` for ``[{name: pamr}]``
        if shorthand is not None and isinstance(value, str):
            value = {shorthand: value}
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(args[0], value, where)
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(inner, v, where) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def changed_keys(old: Any, new: Any, ignore: tuple[str, ...] = (), values: bool = False) -> list[str]:
    """Dotted keys on which two configs (dataclasses, or their ``to_dict`` as stored in a checkpoint) differ,
    those in ``ignore`` aside; with ``values``, each as ``key: old → new``.

    Used to refuse mixing two configurations in one output folder: the stored config is read by today's
    code, so a field added since it was written counts only if it is set to something else.
    """
    def flat(value: Any, prefix: str) -> dict[str, Any]:
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
        return {prefix[:-1]: _plain(value)}

    before, after = (flat(c if isinstance(c, dict) else to_dict(c), "") for c in (old, new))
    keys = sorted(key for key in before.keys() | after.keys() if key not in ignore and before.get(key) != after.get(key))
    return [f"{key}: {before.get(key)!r} → {after.get(key)!r}" for key in keys] if values else keys


def store_run_config(path: Path, cfg: Any, load: Callable[[Path], Any], may_change: tuple[str, ...] = ()) -> None:
    """Write a run folder's resolved config; refuse a folder made with another configuration (naming the keys).

    ``load`` reads the stored file with today's code (so a field added since then counts only if set otherwise).
    ``may_change``: keys, or prefixes ending in ".", of stages that have written nothing yet, so that a finished
    run can be continued with a stage added (nothing already computed was made with the old values).
    """
    from scarce.errors import ScarceError
    from scarce.io import write_text

    changed = changed_keys(load(path), cfg) if path.exists() else []
    changed = [key for key in changed
               if not any(key == free or (free.endswith(".") and key.startswith(free)) for free in may_change)]
    if changed:
        raise ScarceError(f"{path}: this run folder was made with another configuration ({', '.join(changed)} "
                          "differ); use another output folder")
    write_text(path, dump_yaml(cfg))


def resolve(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls`` ← YAML at ``path`` ← command-line overrides."""
    data = load_yaml(path) if path else {}
    data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def _plain(value: Any) -> Any:
    """Tuples → lists (YAML's safe dumper knows only plain types)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(_plain(to_dict(obj) if dataclasses.is_dataclass(obj) else obj), sort_keys=False)
