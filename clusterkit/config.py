"""Typed per-method defaults, YAML config files and KEY=VALUE overrides.

Precedence, lowest first: the method's dataclass defaults, a named preset (`--preset NAME`), `--config
FILE.yaml`, dedicated CLI flags (`--epochs`, `--batch-size`), then `--set KEY=VALUE`. Values are coerced to the field's declared type so
that `--set lr=1e-3` is a float and a typo is an error that lists the valid keys.

Every option is declared once, with its constraint and a one-line help beside it:

    lr: float = option(1e-4, "Adam learning rate of pretraining", low=0, low_open=True)

and a config class states its cross-field rules as data (`rules = (Rule("batch_size", "<=", "big_batch"),)`).
`check_options` is the one place that checks them all, in one message style
(`depict: option lr must be > 0, got -1.0`); `describe_options` lists them for `clusterkit methods NAME`.

A config class may also name sets of options as data, each value with a comment on its source
(`presets = {"paper": {"epochs": 6000, ...}}`); `with_preset` puts one under the other layers.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from clusterkit.errors import InputError

Number = int | float


def option(
    default: Any,
    help: str,
    *,
    low: Number | None = None,
    high: Number | None = None,
    low_open: bool = False,
    high_open: bool = False,
    odd: bool = False,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A config field: its default, one line of help, and the values it accepts.

    `low`/`high` bound the value (inclusive unless `low_open`/`high_open`), `odd` asks for an odd
    integer, `choices` lists the allowed values. None (where the type allows it) and strings such as
    'auto' pass the numeric checks; Literal choices are checked while coercing.
    """
    metadata = {
        "help": help,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "odd": odd,
        "choices": choices,
    }
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Rule:
    """A cross-field rule: `left OP factor * right`, unless `left` is one of `unless` (e.g. 'auto')."""

    left: str
    op: Literal["<=", ">="]
    right: str
    factor: int | float = 1
    unless: tuple[Any, ...] = ()

    def holds(self, config: Any) -> bool:
        left, right = getattr(config, self.left), getattr(config, self.right)
        if left in self.unless:
            return True
        bound = self.factor * right
        return left <= bound if self.op == "<=" else left >= bound

    def text(self, config: Any = None) -> str:
        """'<= big_batch' for a table; given a config, 'not exceed big_batch (32)' for a message."""
        scaled = self.right if self.factor == 1 else f"{self.factor} x {self.right}"
        alternatives = "".join(f"{value!r} or " for value in self.unless)
        if config is None:
            return f"{alternatives}{self.op} {scaled}"
        right = getattr(config, self.right)
        scaled += f" ({right})" if self.factor == 1 else f" ({self.factor} x {right} = {self.factor * right})"
        if self.unless:
            return f"be {alternatives}{'at most' if self.op == '<=' else 'at least'} {scaled}"
        return f"{'not exceed' if self.op == '<=' else 'be at least'} {scaled}"


@dataclasses.dataclass
class MethodConfig:
    """Options every method has: how images are preprocessed before the method sees them."""

    image_size: int | None = option(
        None,
        "side of the square images are resized to; null keeps the first image's size, shrunk to max_image_size",
        low=1,
    )
    max_image_size: int = option(
        64, "longest side, in pixels, of images kept at their own size (image_size null)", low=1
    )
    channels: int | None = option(None, "1 (grayscale) or 3 (RGB); null follows the first image", choices=(1, 3))

    rules: ClassVar[tuple[Rule, ...]] = ()
    # Named sets of options (`fit --preset NAME`): NAME -> {option: value}, the options it sets,
    # each value with a comment naming its source (paper section, or file:line @ commit).
    presets: ClassVar[dict[str, dict[str, Any]]] = {}


def field_names(config_cls: type[MethodConfig]) -> list[str]:
    return [f.name for f in dataclasses.fields(config_cls)]


def _allows_none(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        annotation
    )


def _range_text(meta: dict[str, Any]) -> str:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and high is not None:
        return f"in {'(' if meta['low_open'] else '['}{low:g}, {high:g}{')' if meta['high_open'] else ']'}"
    if low is not None:
        return f"{'>' if meta['low_open'] else '>='} {low:g}"
    if high is not None:
        return f"{'<' if meta['high_open'] else '<='} {high:g}"
    return ""


def _in_range(value: Number, meta: dict[str, Any]) -> bool:
    low, high = meta.get("low"), meta.get("high")
    above = low is None or (value > low if meta["low_open"] else value >= low)
    below = high is None or (value < high if meta["high_open"] else value <= high)
    return above and below


def _field_problem(value: Any, meta: dict[str, Any], nullable: bool) -> str | None:
    """Why `value` breaks the field's own constraint (`'must be > 0'`), or None."""
    if value is None:
        return None
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        listed = ", ".join(str(choice) for choice in choices)
        return f"must be one of {listed}{' or null' if nullable else ''}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # strings ('auto'), Literal choices: checked while coercing
    if not _in_range(value, meta):
        return f"must be {_range_text(meta)}"
    if meta.get("odd") and value % 2 == 0:
        return "must be odd"
    return None


def check_options(config: MethodConfig, method: str) -> None:
    """The one check of every option's constraint and of the class's cross-field rules."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        problem = _field_problem(value, f.metadata, _allows_none(hints[f.name]))
        if problem is not None:
            raise InputError(f"{method}: option {f.name} {problem}, got {value!r}")
    for rule in type(config).rules:
        if not rule.holds(config):
            raise InputError(f"{method}: option {rule.left} ({getattr(config, rule.left)!r}) must {rule.text(config)}")


def _type_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if arg is type(None) else _type_text(arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _constraint_text(name: str, annotation: Any, meta: dict[str, Any], rules: tuple[Rule, ...]) -> str:
    """'>= 1', 'in [0, 0.5)', 'odd, >= 1', 'one of 1, 3 or null', "'auto' or >= grid", ..."""
    parts = []
    if typing.get_origin(annotation) is typing.Literal:
        parts.append("one of " + ", ".join(str(arg) for arg in typing.get_args(annotation)))
    if meta.get("choices") is not None:
        parts.append("one of " + ", ".join(str(choice) for choice in meta["choices"]))
    parts += [text for text in (_range_text(meta), "odd" if meta.get("odd") else "") if text]
    parts += [rule.text() for rule in rules if rule.left == name]
    text = ", ".join(parts)
    return f"{text} or null" if text and _allows_none(annotation) else text


def describe_options(config_cls: type[MethodConfig]) -> list[dict[str, Any]]:
    """One entry per option: name, type, default, constraint (text) and help, in declaration order."""
    hints = typing.get_type_hints(config_cls)
    return [
        {
            "name": f.name,
            "type": _type_text(hints[f.name]),
            "default": f.default,
            "constraint": _constraint_text(f.name, hints[f.name], f.metadata, config_cls.rules),
            "help": f.metadata.get("help", ""),
        }
        for f in dataclasses.fields(config_cls)
    ]


_EXPECTED = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def _expected(annotation: Any) -> str:
    """What a value of this type looks like, for a message: 'an integer or null', "one of ['auto']"."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        return " or ".join([_expected(arg) for arg in args if arg is not type(None)] + ["null"] * (type(None) in args))
    if origin is typing.Literal:
        return f"one of {list(typing.get_args(annotation))}"
    return _EXPECTED.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """`value` as the field's type (an int is a valid float); else 'KEY must be EXPECTED, got VALUE'."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except InputError:
                pass
    elif origin is typing.Literal:
        if value in typing.get_args(annotation):
            return value
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise InputError(f"{key} must be {_expected(annotation)}, got {value!r}")


def build_config(config_cls: type[MethodConfig], overrides: dict[str, Any], method: str) -> MethodConfig:
    """Defaults of `config_cls` with `overrides` applied; unknown keys name the valid ones."""
    hints = typing.get_type_hints(config_cls)
    valid = field_names(config_cls)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise InputError(f"unknown option(s) for {method}: {', '.join(unknown)}; valid: {', '.join(valid)}")
    try:
        values = {key: _coerce(value, hints[key], key) for key, value in overrides.items()}
    except InputError as exc:
        raise InputError(f"{method}: option {exc}") from None
    config = config_cls(**values)
    check_options(config, method)
    return config


def preset_options(config_cls: type[MethodConfig], name: Any, method: str) -> dict[str, Any]:
    """The options of `config_cls`'s preset `name`; an unknown name lists the method's presets."""
    presets = config_cls.presets
    if isinstance(name, str) and name in presets:
        return dict(presets[name])
    if not presets:
        raise InputError(f"unknown preset {name!r}: {method} has no presets")
    raise InputError(f"unknown preset {name!r} for {method}; its presets: {', '.join(presets)}")


def with_preset(
    config_cls: type[MethodConfig], name: Any, options: dict[str, Any], method: str
) -> tuple[dict[str, Any], list[str]]:
    """`options` (from --config, the flags and --set) laid over the preset `name` (None: no preset),
    and the preset's options that they set to another value, for a note."""
    if name is None:
        return dict(options), []
    preset = preset_options(config_cls, name, method)
    overridden = [key for key, value in preset.items() if key in options and options[key] != value]
    return {**preset, **options}, overridden


def parse_set_options(pairs: list[str]) -> dict[str, Any]:
    """`["lr=1e-3", "layers=2"]` -> `{"lr": 0.001, "layers": 2}`; values are read as YAML scalars."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            result[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            result[key.strip()] = raw
        except RecursionError:
            raise InputError(f"--set {key.strip()}: the value is nested too deeply") from None
        if isinstance(result[key.strip()], str) and _looks_numeric(raw):
            result[key.strip()] = float(raw)
    return result


def _looks_numeric(raw: str) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise InputError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise InputError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise InputError(f"config file {path} is nested too deeply to be a config") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a mapping of KEY: VALUE")
    return data


def config_to_dict(config: MethodConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
