"""Typed per-method defaults, YAML config files and KEY=VALUE overrides.

Precedence, lowest first: the method's dataclass defaults, `--config FILE.yaml`, dedicated CLI flags
(`--epochs`, `--batch-size`), then `--set KEY=VALUE`. Values are coerced to the field's declared type so
that `--set lr=1e-3` is a float and a typo is an error that lists the valid keys.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from clusterkit.errors import InputError


@dataclasses.dataclass
class MethodConfig:
    """Options every method has: how images are preprocessed before the method sees them.

    image_size: side of the square the images are resized to; None keeps the first image's size,
    shrunk so that its longer side is at most `max_image_size`. channels: 1 or 3; None follows the
    first image (grayscale stays grayscale).
    """

    image_size: int | None = None
    max_image_size: int = 64
    channels: int | None = None

    def check_preprocessing(self) -> None:
        """The options every method shares; a method's own `validate` checks the rest."""
        if self.image_size is not None and self.image_size < 1:
            raise InputError(f"image_size must be a positive number of pixels (or null), got {self.image_size}")
        if self.max_image_size < 1:
            raise InputError(f"max_image_size must be a positive number of pixels, got {self.max_image_size}")
        if self.channels not in (None, 1, 3):
            raise InputError(f"channels must be 1 (grayscale), 3 (RGB) or null (as the images), got {self.channels}")


def field_names(config_cls: type[MethodConfig]) -> list[str]:
    return [f.name for f in dataclasses.fields(config_cls)]


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(errors[0] if errors else f"bad value for {key}: {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise InputError(f"{key} must be one of {list(typing.get_args(annotation))}, got {value!r}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise InputError(f"{key} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{key} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise InputError(f"{key} must be a string, got {value!r}")
        return value
    return value


def build_config(config_cls: type[MethodConfig], overrides: dict[str, Any], method: str) -> MethodConfig:
    """Defaults of `config_cls` with `overrides` applied; unknown keys name the valid ones."""
    hints = typing.get_type_hints(config_cls)
    valid = field_names(config_cls)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise InputError(f"unknown option(s) for {method}: {', '.join(unknown)}; valid: {', '.join(valid)}")
    values = {key: _coerce(value, hints[key], key) for key, value in overrides.items()}
    config = config_cls(**values)
    config.check_preprocessing()
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


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
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a mapping of KEY: VALUE")
    return data


def config_to_dict(config: MethodConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
