"""Typed configuration: dataclass defaults, then a YAML file, then ``key.sub=value`` overrides.

Every run folder stores the resolved configuration so that a number can be traced to its settings.
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from scarce.errors import ConfigError

T = TypeVar("T")


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
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
    return cls(**kwargs)


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


def changed_keys(old: Any, new: Any, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys on which two configs (dataclasses) differ, those in ``ignore`` aside.

    Used to refuse mixing two configurations in one output folder: the stored config is read by today's
    code, so a field added since it was written counts only if it is set to something else.
    """
    def flat(value: Any, prefix: str) -> dict[str, Any]:
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
        return {prefix[:-1]: _plain(value)}

    before, after = flat(to_dict(old), ""), flat(to_dict(new), "")
    return sorted(key for key in before.keys() | after.keys() if key not in ignore and before.get(key) != after.get(key))


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
