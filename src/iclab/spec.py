"""Build validated dataclasses from plain dicts (YAML, JSON, `--set` overrides, `name:key=value` strings).

Every error names the offending key and what is allowed, so a typo in a config is a one-line fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import types
import typing
from typing import Any

import yaml

from .errors import UserError


def _type_name(tp: Any) -> str:
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def describe_key(key: str) -> str:
    """How errors name a key: "config key 'train.lr'", or for a spec typed after a command-line option (keys
    '--task.nnz'), "parameter 'nnz'" (Registry.make puts the option and the spec in front)."""
    option, _, rest = key.partition(".")
    if option.startswith("--"):
        return f"parameter '{rest}'" if rest else option
    return f"config key '{key}'"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it converted (int -> float is allowed)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise key_error(key, f"expected a mapping, got {value!r}")
        if hasattr(tp, "from_spec"):  # a base whose `name` key chooses the registered class (model: {name: ...})
            return tp.from_spec(value, key)
        return build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise key_error(key, f"expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise key_error(key, f"expected a mapping, got {value!r}")
        item = typing.get_args(tp)[1] if typing.get_args(tp) else Any  # dict[str, X]: each value an X
        return {k: _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" as a string; accept it as the number it obviously is
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool):
        if isinstance(value, bool) and tp is not bool:
            raise key_error(key, f"expected {_type_name(tp)}, got {value!r}")
        if not isinstance(value, tp):
            raise key_error(key, f"expected {_type_name(tp)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):  # YAML reads .nan and .inf as floats
        raise key_error(key, f"expected a finite number, got {value!r}")
    return value


def _check_bounds(value: Any, meta: typing.Mapping, key: str) -> None:
    if value is None:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise key_error(key, f"{value!r} is not one of {', '.join(map(str, meta['choices']))}")
    if "min" in meta and value < meta["min"]:
        raise key_error(key, f"must be >= {meta['min']}, got {value!r}")
    if "gt" in meta and value <= meta["gt"]:
        raise key_error(key, f"must be > {meta['gt']}, got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise key_error(key, f"must be <= {meta['max']}, got {value!r}")
    if "lt" in meta and value >= meta["lt"]:
        raise key_error(key, f"must be < {meta['lt']}, got {value!r}")


def key_error(key: str, message: str) -> UserError:
    """The one format of every config error: config key 'train.lr': <what is wrong and what is allowed>."""
    return UserError(f"{describe_key(key)}: {message}")


def _did_you_mean(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_key_error(key: str, allowed: typing.Iterable[str], where: str) -> UserError:
    allowed = sorted(allowed)
    return UserError(f"unknown {where} '{key}'{_did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}")


def build(cls: type, data: dict, prefix: str = "") -> Any:
    """Construct dataclass `cls` from `data`, validating keys, types and `field(metadata=...)` bounds."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise unknown_key_error(full, fields, "config key")
        value = _coerce(value, hints[key], full)
        _check_bounds(value, fields[key].metadata, full)
        kwargs[key] = value
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            full = f"{prefix}.{name}" if prefix else name
            raise UserError(f"{describe_key(full)} is required")
    if "_prefix" in inspect.signature(cls).parameters:  # the class validates itself in __post_init__
        return cls(**kwargs, _prefix=prefix)
    obj = cls(**kwargs)
    if hasattr(obj, "check"):
        obj.check(prefix)
    return obj


def parse_value(text: str) -> Any:
    """Parse an override value the way YAML would (numbers, booleans, lists, mappings)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's error in one line with its place, e.g. "line 3, column 5: mapping values are not allowed here"
    (PyYAML spreads it over several lines, with the place on the second)."""
    def place(mark) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    mark, context_mark = getattr(error, "problem_mark", None), getattr(error, "context_mark", None)
    what = getattr(error, "problem", None) or str(error).splitlines()[0]
    if getattr(error, "context", None):  # e.g. "while parsing a flow sequence", opened at context_mark
        what += f" ({error.context}{' at ' + place(context_mark) if context_mark is not None else ''})"
    mark = mark or context_mark
    return f"{place(mark)}: {what}" if mark is not None else what


def parse_named(text: str) -> dict:
    """Parse 'name' or 'name:key=value,key=value' (the CLI form of a task, shift or estimator spec)."""
    name, _, rest = text.partition(":")
    spec: dict[str, Any] = {"name": name.strip()}
    for part in filter(None, (p.strip() for p in _split_top_level(rest))):
        key, eq, value = part.partition("=")
        if not eq:
            raise UserError(f"bad parameter '{part}' in '{text}': write NAME:key=value,key=value")
        spec[key.strip()] = parse_value(value.strip())
    return spec


def split_specs(text: str) -> list[str]:
    """Split a comma list of specs such as 'least_squares,boosting:rounds=5,max_depth=3': a part with '=' but no ':'
    is one more parameter of the spec before it, so specs with several parameters need no quoting."""
    specs: list[str] = []
    for part in filter(None, (p.strip() for p in _split_top_level(text))):
        if specs and "=" in part and ":" not in part.split("=", 1)[0]:
            specs[-1] += "," + part
        else:
            specs.append(part)
    return specs


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets, so that 'nnz=[5,2],weights=[1,1]' gives two parts."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "[{" and 1 or (ch in "]}" and -1 or 0)
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def format_named(spec: dict) -> str:
    """The inverse of `parse_named`: a short, stable label such as 'lasso:alpha=0.01'."""
    params = ",".join(f"{k}={_compact(v)}" for k, v in spec.items() if k != "name")
    return f"{spec['name']}:{params}" if params else spec["name"]


def _compact(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    return str(value)


class Registry:
    """Named constructors (dataclasses) for one kind of thing: tasks, input distributions, estimators.

    A name is registered once: a second class under a taken name is refused (it would silently replace the first,
    built-in or a plugin's), as lm-evaluation-harness's registries do."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, type] = {}

    def register(self, name: str):
        def deco(cls):
            taken = self._classes.get(name)
            if taken is not None and taken is not cls:
                raise UserError(
                    f"{self.kind} '{name}' is already registered (by {taken.__module__}.{taken.__qualname__}); "
                    f"register {cls.__module__}.{cls.__qualname__} under another name"
                )
            self._classes[name] = cls
            cls.registry_name = name
            return cls

        return deco

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type:
        if name not in self._classes:
            raise unknown_key_error(name, self._classes, self.kind)
        return self._classes[name]

    def make(self, spec: dict | str, prefix: str | None = None, **context: Any) -> Any:
        """Build from {'name': ..., params...}; `context` supplies values (e.g. dims) not given in the spec.
        `prefix` names where the spec came from in errors: a config key ('task', 'task.components[1]'), or a
        command-line option ('--task'), whose errors then start with the option and the spec as typed."""
        if isinstance(spec, str):
            spec = parse_named(spec)
        if not (prefix and prefix.startswith("--") and "." not in prefix):
            return self._make(spec, prefix, context)
        try:
            return self._make(spec, prefix, context)
        except UserError as e:
            shown = format_named(spec) if isinstance(spec, dict) and "name" in spec else repr(spec)
            raise UserError(f"{prefix} {shown}: {e}") from None

    def _make(self, spec: Any, prefix: str | None, context: dict) -> Any:
        if not isinstance(spec, dict) or "name" not in spec:
            raise UserError(f"{prefix or self.kind}: expected a mapping with a 'name' key, got {spec!r}")
        params = {k: v for k, v in spec.items() if k != "name"}
        cls = self.get(spec["name"])
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(params.keys() - names)
        if unknown and prefix and prefix.startswith("--"):  # typed on the command line: say what this name takes
            allowed = sorted(names - set(context))  # the context's values (dims) come from the run, not the spec
            what = f"allowed: {', '.join(allowed)}" if allowed else "it takes none"
            key = unknown[0]
            raise UserError(f"'{spec['name']}' takes no parameter '{key}'{_did_you_mean(key, allowed)}; {what}")
        for key, value in context.items():
            if key in names and key not in params:
                params[key] = value
        return build(cls, params, prefix or spec["name"])
