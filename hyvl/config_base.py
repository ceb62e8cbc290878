"""The machinery under :mod:`hyvl.config`: pydantic sections whose errors are one line.

pydantic validates; this module turns its errors into one :class:`~hyvl.errors.ConfigError`
line naming the dotted key (with the nearest valid key for a typo), reads numbers as users
type them, and applies dotted ``key=value`` overrides to YAML mappings.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from hyvl.errors import ConfigError

# --------------------------------------------------------------------------------------
# Values as users type them
# --------------------------------------------------------------------------------------


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` and ``1e5`` (no dot) as strings: parse them as numbers."""
    if isinstance(value, str):
        try:
            return float(value) if not value.strip().lstrip("+-").isdigit() else int(value)
        except ValueError:
            return value  # not a number: pydantic reports it
    return value


Int = Annotated[int, BeforeValidator(_number)]
Float = Annotated[float, BeforeValidator(_number)]


class Section(BaseModel):
    """A config section: unknown keys and bad values raise ConfigError naming the dotted key."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, protected_namespaces=())
    # the section's dotted prefix in a run config, for errors from direct construction
    where: ClassVar[str] = ""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise config_error(err, type(self), type(self).where) from None


# --------------------------------------------------------------------------------------
# Errors users read
# --------------------------------------------------------------------------------------

_EXPECTED = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_parsing": "true/false",
    "bool_type": "true/false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _nearest(key: str, valid: list[str], where: str = "") -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    if not close:
        return ""
    return f"; did you mean {(where + '.' if where else '') + close[0]!r}?"


def section_class(annotation: Any) -> type[Section] | None:
    """The config section an annotation names, or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    return None


def _key(cls: type[Section], loc: tuple, where: str) -> tuple[str, str, list[str]]:
    """(dotted key, dotted section, field names of that section) for a pydantic error location.

    Union member tags in the location (``str``, ``list[str]``) are not part of the key.
    """
    parts, node, section, names = [where] if where else [], cls, where, list(cls.model_fields)
    for item in loc:
        if node is not None:
            section, names = ".".join(parts), list(node.model_fields)
            parts.append(str(item))
            field = node.model_fields.get(item)
            node = section_class(field.annotation) if field else None
        elif isinstance(item, int) and parts:
            parts[-1] += f"[{item}]"
    return ".".join(parts), section, names


def config_error(err: ValidationError, cls: type[Section], where: str = "") -> ConfigError:
    """The first error of ``err`` as one line naming the dotted key."""
    errors = err.errors()
    first = errors[0]
    key, section, names = _key(cls, first["loc"], where)
    value, kind, ctx = first.get("input"), first["type"], first.get("ctx") or {}
    if kind == "extra_forbidden":
        leaf = key.rsplit(".", 1)[-1]
        return ConfigError(f"unknown config key {key!r}{_nearest(leaf, names, section)}")
    if kind == "value_error":
        error = ctx.get("error")
        if isinstance(error, ConfigError):  # a nested section or our own check: names its keys
            return error
        return ConfigError(f"{key or 'config'}: {error or first['msg']}")
    if kind == "missing" and first["loc"] and isinstance(first["loc"][-1], int):
        return ConfigError(f"{key.rsplit('[', 1)[0]}: too few values, got {value!r}")
    # a union (str | list) fails once per member: say what would have fitted
    same = [e for e in errors if _key(cls, e["loc"], where)[0] == key]
    expected = [_EXPECTED[e["type"]] for e in same if e["type"] in _EXPECTED]
    if len(same) > 1 and len(expected) == len(same):
        return ConfigError(f"{key}: expected {' or '.join(expected)}, got {value!r}")
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return ConfigError(f"{key} must be {_BOUNDS[kind]} {bound:g}, got {value!r}")
    if kind == "literal_error":
        return ConfigError(f"{key}: {value!r} is not one of {ctx['expected']}")
    if kind in _EXPECTED:
        return ConfigError(f"{key}: expected {_EXPECTED[kind]}, got {value!r}")
    return ConfigError(f"{key or 'config'}: {first['msg']} (got {value!r})")


# --------------------------------------------------------------------------------------
# Reading, overriding, writing
# --------------------------------------------------------------------------------------


def from_dict(cls: type[Section], data: dict | None, where: str | None = None) -> Any:
    """Validate a mapping into section ``cls``; errors are ConfigError naming the dotted key."""
    where = cls.where if where is None else where
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise config_error(err, cls, where) from None


def to_dict(obj: Any) -> Any:
    """A config -> plain dict of YAML/JSON-safe values (tuples become lists)."""
    return obj.model_dump(mode="json")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.max_steps=10"`` -> (["train", "max_steps"], 10); the value is parsed as YAML."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from err
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply dotted overrides to a raw (not yet validated) config mapping, in place."""
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for i, key in enumerate(keys[:-1]):
            child = node.get(key)
            if isinstance(child, str) and key == "model" and i == 0:
                # `model: meru_tiny` plus `model.embed_dim=64` -> a named base with overrides.
                child = {"base": child}
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(keys[: i + 1])} is not a mapping")
            node[key] = child
            node = child
        node[keys[-1]] = value
    return data


def load_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: top level must be a mapping")
    return data


def field_row(key: str, field: Any) -> dict[str, Any]:
    """One row of ``hyvl config keys``: key, type, default, help of a pydantic field."""
    default = field.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        default = to_dict(default)
    elif isinstance(default, tuple):
        default = list(default)
    return {
        "key": key,
        "type": _type_name(field.annotation),
        "default": default,
        "help": field.description or "",
    }


def _type_name(annotation: Any) -> str:
    """A short type for people: ``int``, ``float | null``, ``fp32 | bf16 | fp16``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (tuple, list):
        inner = ", ".join(_type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    return getattr(annotation, "__name__", str(annotation))
