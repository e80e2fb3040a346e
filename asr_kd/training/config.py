"""Experiment configs: one YAML file per experiment, ``key.sub=value`` overrides from the command line.

Usage::

    cfg = load_config("egs/synth/ASR/conf/conformer_ctc_xs.yaml", ["training.max_steps=200", "optim.lr=1e-3"])

Sections (all optional except ``model``): ``data`` (manifests, lang dir, sampler/augmentation
settings), ``model`` (passed to ``asr_kd.models.build_asr_model``), ``loss`` (normaliser, RNN-T warm-up),
``optim`` (``build_optimizer``), ``scheduler`` (``build_scheduler``), ``training``
(``TrainerConfig`` plus ``seed``). A config may name a ``base: other.yaml`` (relative to itself) whose
values it overrides.

Composition. Mappings merge key by key (:func:`deep_update`); anything else (lists included) replaces.
A file's top-level ``replace: [model.encoder, optim, scheduler]`` names dotted sections that the file
*replaces* instead of merging into: keys of its base's section that it does not repeat are dropped (a
Zipformer ``model.encoder`` laid over a Conformer one must not keep ``subsampling_channels``). Every
listed key must be set by the file itself. :func:`load_config` also takes a list of files: the first
one (with its ``base:`` chain) is the config, each later one is laid over the result the same way, its
``replace:`` keys included (an *overlay*, e.g. ``conf/students/zipformer_s.yaml`` on any KD row config;
``asr_kd.bin.train --config ROW --config OVERLAY``). Overrides ``a.b=value`` come last; a numeric part
indexes an existing list (``kd.methods.0.layers=[4,final]``).

Checking. :func:`check_section` is the one check of every section: it rejects keys that are not in
the section's schema (a ``{key: type hint}`` mapping, e.g. from a dataclass with
:func:`dataclass_schema`), naming the key and the known ones, and values of the wrong type, naming
the key (``training.ckpt_interval must be an integer, not 'five'``). :func:`validate_config` runs it
over the sections of an experiment (the train CLI's schema: :func:`asr_kd.bin.train.config_schema`)
before anything is built or written; type hints understood are ``int``, ``float``, ``bool``, ``str``,
``None``, unions, ``Literal``, lists / tuples / sequences of them, mappings, paths and dataclasses
(checked recursively as nested sections).
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = [
    "load_config",
    "apply_overrides",
    "compose",
    "deep_update",
    "dump_config",
    "ConfigError",
    "check_section",
    "check_value",
    "dataclass_schema",
    "validate_config",
]


class ConfigError(ValueError):
    """A config key that does not exist, or a value of the wrong type; the message names the key."""


#: a section's schema: ``{key: type hint}`` (``Any``: any value)
Schema = Mapping[str, Any]


def dataclass_schema(cls: type, extra: Schema | None = None) -> dict[str, Any]:
    """``{field name: resolved type hint}`` of a dataclass, plus ``extra`` keys."""
    hints = typing.get_type_hints(cls)
    out = {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}
    out.update(extra or {})
    return out


def check_section(section: Any, schema: Schema, where: str) -> None:
    """Raise :class:`ConfigError` if ``section`` has a key not in ``schema`` or a value whose type does
    not match its hint. ``where`` names the section in messages (``"optim"``, ``"data.spec_augment_config"``)."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where} must be a mapping of key: value, not {section!r}")
    unknown = sorted(str(k) for k in section if k not in schema)
    if unknown:
        raise ConfigError(
            f"unknown {where} config keys {unknown}; known: {sorted(schema)}. "
            "Fix the spelling in the config file or the key=value override"
        )
    for key, value in section.items():
        check_value(value, schema[key], f"{where}.{key}")


def check_value(value: Any, hint: Any, where: str) -> None:
    """Raise :class:`ConfigError` naming ``where`` when ``value`` does not match the type ``hint``."""
    if not _matches(value, hint, where):
        raise ConfigError(f"{where} must be {_describe(hint)}, not {value!r}")


def _matches(value: Any, hint: Any, where: str) -> bool:
    """Whether ``value`` fits ``hint``; a mapping for a dataclass is checked as a nested section
    (its errors name the nested key)."""
    if hint is Any or hint is object:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        nested = [a for a in args if dataclasses.is_dataclass(a)]
        if nested and isinstance(value, Mapping):
            check_section(value, dataclass_schema(nested[0]), where)
            return True
        return any(_matches(value, a, where) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a, where) for v, a in zip(value, args))
        item = args[0] if args else Any
        return all(_matches(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, Mapping)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (dict, Mapping):
        return isinstance(value, Mapping)
    if hint in (list, tuple):
        return isinstance(value, (list, tuple))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return True
        check_section(value, dataclass_schema(hint), where)
        return True
    if isinstance(hint, type) and issubclass(hint, os.PathLike):
        return isinstance(value, (str, os.PathLike))
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a hint this checker does not know: accept


def _describe(hint: Any) -> str:
    if hint is None or hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        return " or ".join(dict.fromkeys(_describe(a) for a in args))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
        return f"a list of {_plural(args[0])}" if args and args[0] is not Any else "a list"
    if origin in (dict, collections.abc.Mapping) or hint in (dict, Mapping):
        return "a mapping (key: value)"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}
    if hint in names:
        return names[hint]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return f"a mapping of {hint.__name__} fields"
    if isinstance(hint, type) and issubclass(hint, os.PathLike):
        return "a path"
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}.get(hint, _describe(hint))


def validate_config(cfg: Mapping[str, Any], schema: Mapping[str, Schema | Callable[[Mapping], Schema]]) -> None:
    """Check an experiment config against ``{section: schema}`` before anything is built.

    Unknown top-level sections are rejected; each present, non-null section goes through
    :func:`check_section`. A section's schema may be a callable of the section itself (e.g. the
    optimiser's keys depend on its ``name``)."""
    check_section(cfg, {name: Any for name in schema}, "top-level")
    for name, section_schema in schema.items():
        section = cfg.get(name)
        if section is None:
            continue
        if not isinstance(section, Mapping):
            raise ConfigError(f"config section {name!r} must be a mapping of key: value, not {section!r}")
        keys = section_schema(section) if callable(section_schema) else section_schema
        check_section(section, keys, name)


def deep_update(base: dict, other: Mapping[str, Any]) -> dict:
    """Recursively merge ``other`` into a copy of ``base`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in other.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (``[1, 2]``, ``null``, ``true``), and
    number-like strings such as ``1e-3`` as floats."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key.sub=value")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ValueError(f"override {item!r} has an empty key")
        node: Any = cfg
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):  # a numeric part indexes an existing list: kd.methods.0.layers=...
                if not p.lstrip("-").isdigit() or not -len(node) <= int(p) < len(node):
                    where = ".".join(parts[:i]) or "the config"
                    raise ValueError(
                        f"override {item!r}: {where} is a list of {len(node)} items, {p!r} is not an index into it"
                    )
                if last:
                    node[int(p)] = _parse_value(value)
                elif not isinstance(node[int(p)], (dict, list)):
                    node[int(p)] = {}
                if not last:
                    node = node[int(p)]
                continue
            if last:
                node[p] = _parse_value(value)
            else:
                if not isinstance(node.get(p), (dict, list)):
                    node[p] = {}
                node = node[p]
    return cfg


def _parse_value(text: str) -> Any:
    """YAML value, with numbers YAML 1.1 leaves as strings (``1e-3``, ``2E5``) read as floats."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def load_config(path: str | os.PathLike | Sequence[str | os.PathLike], overrides: Iterable[str] = ()) -> dict:
    """Read a YAML config (following ``base:`` chains, honouring ``replace:``) and apply ``overrides``.

    ``path`` may be a list of files: the first is the config, each later one an overlay laid over it
    (module docstring, "Composition")."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        raise ValueError("load_config: no config file given")
    cfg: dict = {}
    for i, p in enumerate(paths):
        own, replace = _read_config(Path(p))
        cfg = own if i == 0 else compose(cfg, own, replace, str(p))
    return apply_overrides(cfg, overrides)


def _read_config(path: Path) -> tuple[dict, list[str]]:
    """One file with its ``base:`` chain resolved, and the file's own ``replace:`` list (already applied
    against its base; returned so that an overlay can apply it against what it is laid over)."""
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: the top level must be a mapping")
    base = cfg.pop("base", None)
    replace = cfg.pop("replace", None) or []
    if isinstance(replace, str) or not all(isinstance(k, str) and k for k in replace):
        raise ConfigError(
            f"{path}: replace must be a list of dotted keys (e.g. [model.encoder, optim]), not {replace!r}"
        )
    for key in replace:
        if _lookup(cfg, key) is _MISSING:
            raise ConfigError(f"{path}: replace names {key!r}, which this file does not set")
    if base is not None:
        cfg = compose(load_config(path.parent / base), cfg, replace, str(path))
    return cfg, list(replace)


_MISSING = object()


def _lookup(cfg: Mapping[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def compose(base: dict, other: Mapping[str, Any], replace: Iterable[str] = (), where: str = "config") -> dict:
    """``other`` laid over ``base``: :func:`deep_update`, except that each dotted key of ``replace`` (set
    in ``other``) takes ``other``'s value whole, dropping the keys of ``base``'s that ``other`` does not
    repeat. ``where`` names ``other`` in errors."""
    out = deep_update(base, other)
    for key in replace:
        value = _lookup(other, key)
        if value is _MISSING:
            raise ConfigError(f"{where}: replace names {key!r}, which it does not set")
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node[part]  # present: deep_update copied other's path
        node[last] = copy.deepcopy(value)
    return out


def dump_config(cfg: Mapping[str, Any], path: str | os.PathLike, header: Iterable[str] = ()) -> None:
    """Write the resolved config as YAML (the exact settings of a run, next to its checkpoints), after
    ``header`` lines as ``#`` comments. Paths are written as strings, tuples as lists."""
    from .checkpoint import _plain_config

    with open(path, "w") as f:
        for line in header:
            f.write(f"# {line}\n")
        yaml.safe_dump(_plain_config(dict(cfg)), f, sort_keys=False)
