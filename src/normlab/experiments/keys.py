"""The keys and values of a run config: which keys exist, and one validated RunConfig.

Knows RunConfig's fields (top-level and dotted section keys such as `optim.weight_decay`) and
the package registries (norm, model and dataset names, each norm's arguments), and turns
every mistake into ONE `ConfigError` that names the key: an unknown key with the closest
valid one, a wrong type, an out-of-range value, an unknown name.
"""

from __future__ import annotations

import copy
import difflib
import math
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from normlab._deprecated import warn_renamed
from normlab.experiments.errors import ConfigError
from normlab.train.config import RENAMED_KEYS, RunConfig

# Dict-valued RunConfig fields whose sub-keys are free (passed through to the norm).
FREE_DICT_FIELDS = ("norm_kwargs",)

# --- the keys RunConfig accepts ------------------------------------------------------------


def _section_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _is_sequence_annotation(annotation: Any) -> bool:
    """True for list[...] / tuple[...] (optionally `| None`): values that are lists themselves."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence_annotation(arg) for arg in typing.get_args(annotation))
    return origin in (list, tuple) or annotation in (list, tuple)


def _allows_none(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation)


def config_keys() -> list[str]:
    """Every key a user can set, dotted for nested sections (e.g. `optim.weight_decay`)."""
    keys = []
    for name, info in RunConfig.model_fields.items():
        section = _section_model(info.annotation)
        if section is None:
            keys.append(name)
        else:
            keys.extend(f"{name}.{sub}" for sub in section.model_fields)
    return keys


def suggest(key: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.5)
    return f"; did you mean `{close[0]}`?" if close else ""


def current_key(key: str) -> str:
    """The key's current name: a renamed key (`RENAMED_KEYS`) warns and gives its new name."""
    if key in RENAMED_KEYS:
        warn_renamed(f"config key `{key}`", f"`{RENAMED_KEYS[key]}`")
        return RENAMED_KEYS[key]
    return key


def check_key(key: str, where: str = "") -> None:
    """Raise ConfigError if `key` (dotted) is not a RunConfig key."""
    head, _, rest = key.partition(".")
    fields = RunConfig.model_fields
    if head not in fields:
        raise ConfigError(
            f"{where}unknown key `{key}`{suggest(key, config_keys())} (`normlab sweep --help` lists the keys)"
        )
    section = _section_model(fields[head].annotation)
    if not rest:
        if section is not None:
            raise ConfigError(
                f"{where}`{key}` is a section, not a value; set its keys, e.g. "
                f"`{key}.{next(iter(section.model_fields))}=...`"
            )
        return
    if head in FREE_DICT_FIELDS:
        return
    if section is None:
        raise ConfigError(f"{where}unknown key `{key}`: `{head}` has no sub-keys; write `{head}=...`")
    if rest not in section.model_fields:
        raise ConfigError(
            f"{where}unknown key `{key}`{suggest(key, config_keys())} (`{head}` has: {', '.join(section.model_fields)})"
        )


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config sections -> dotted keys ({'optim': {'lr': 1}} -> {'optim.lr': 1})."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise ConfigError(f"config keys must be strings, got {key!r} ({type(key).__name__})")
        dotted = current_key(f"{prefix}{key}")
        head = dotted.partition(".")[0]
        nestable = head in RunConfig.model_fields and (
            _section_model(RunConfig.model_fields[head].annotation) is not None or head in FREE_DICT_FIELDS
        )
        if isinstance(value, dict) and nestable and value:
            inner = flatten(value, prefix=f"{dotted}.")
        else:
            inner = {dotted: value}
        for inner_key, inner_value in inner.items():
            if inner_key in flat:  # `optim.lr: 1` next to `optim: {lr: 2}`
                raise ConfigError(f"`{inner_key}` is given twice (dotted and nested); give it once")
            flat[inner_key] = inner_value
    return flat


# --- building and checking one config ------------------------------------------------------


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys -> nested sections ({'optim.lr': 1} -> {'optim': {'lr': 1}}); later keys win."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        # A copy: a later dotted key fills this dict, and `flat` shares it with every other run.
        node[last] = copy.deepcopy(value) if isinstance(value, dict) else value
    return nested


def _describe_error(err: dict[str, Any], flat: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err.get("loc", ()) if not isinstance(p, int))
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    if not key:
        return msg
    if key in flat:
        return f"`{key}`: {msg[0].lower() + msg[1:]}, got {flat[key]!r}"
    return f"`{key}`: {msg[0].lower() + msg[1:]}"


def _registered(kind: str) -> list[str] | None:
    """Names from the package registry (imported lazily); None if the registry is not there."""
    try:
        if kind == "norm":
            from normlab.layers import norm_names as names
        elif kind == "model":
            from normlab.models import model_names as names
        else:
            from normlab.data import dataset_names as names
    except ImportError:
        return None
    return list(names())


def build_config(flat: dict[str, Any], where: str = "") -> RunConfig:
    """Validate dotted key values into a RunConfig; any problem is one ConfigError."""
    for key in flat:
        check_key(key, where)
    try:
        config = RunConfig.model_validate(_nest(flat))
    except ValidationError as exc:
        raise ConfigError(f"{where}{_describe_error(exc.errors()[0], flat)}") from None
    for kind in ("norm", "model", "dataset"):
        value = getattr(config, kind)
        names = _registered(kind)
        if names is not None and value not in names:
            raise ConfigError(
                f"{where}`{kind}`: unknown {kind} {value!r}{suggest(value, names)} (valid: {', '.join(names)})"
            )
    _check_norm_kwargs(config, where)
    _check_numbers(config.model_dump(), where)
    return config


MAX_SEED = 2**63 - 1
"""torch's generators take seeds below 2**64; the store's integers end at 2**63 - 1."""


def _check_numbers(values: dict[str, Any], where: str, prefix: str = "") -> None:
    """Every number finite (an infinite lr or init scale is accepted by `> 0` but trains
    nothing) and the seed in the generators' range."""
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            _check_numbers(value, where, f"{dotted}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}`{dotted}`: expected a finite number, got {value}")
        elif isinstance(value, (list, tuple)) and any(isinstance(v, float) and not math.isfinite(v) for v in value):
            raise ConfigError(f"{where}`{dotted}`: expected finite numbers, got {list(value)}")
    if not prefix and values.get("seed", 0) > MAX_SEED:
        raise ConfigError(f"{where}`seed`: expected 0 <= seed <= {MAX_SEED} (2**63 - 1), got {values['seed']}")


def _check_norm_kwargs(config: RunConfig, where: str) -> None:
    """norm_kwargs must be arguments of the chosen norm (else every run of it would crash)."""
    try:
        from normlab.layers import norm_kwargs
    except ImportError:
        return
    accepted = norm_kwargs(config.norm)
    for key in config.norm_kwargs:
        if key not in accepted:
            raise ConfigError(
                f"{where}`norm_kwargs.{key}`: norm {config.norm!r} takes no argument {key!r}"
                f"{suggest(key, accepted)} (it takes: {', '.join(accepted) or 'none'}); "
                "set it only in the groups whose norm uses it"
            )


def field_annotation(key: str) -> Any:
    """The type annotation of a key (None for free sub-keys such as norm_kwargs.num_groups)."""
    head, _, rest = key.partition(".")
    annotation = RunConfig.model_fields[head].annotation
    if not rest:
        return annotation
    section = _section_model(annotation)
    return section.model_fields[rest].annotation if section is not None else None


def is_sequence_key(key: str) -> bool:
    """True for keys whose value is itself a list (`hidden`, `optim.betas`)."""
    annotation = field_annotation(key)
    return annotation is not None and _is_sequence_annotation(annotation)


def is_text_key(key: str) -> bool:
    """True for free-text keys (`norm`, `data_root`): a typed value such as `off` stays text."""
    annotation = field_annotation(key)
    return annotation is str or (_allows_none(annotation) and str in typing.get_args(annotation))


def none_allowed(key: str) -> bool:
    """True where the word 'none' on the command line means None (not for text keys)."""
    annotation = field_annotation(key)
    return annotation is not None and _allows_none(annotation) and not is_text_key(key)


__all__ = [
    "FREE_DICT_FIELDS",
    "build_config",
    "check_key",
    "config_keys",
    "current_key",
    "field_annotation",
    "flatten",
    "is_sequence_key",
    "is_text_key",
    "none_allowed",
    "suggest",
]
