"""`clusterkit methods [NAME]`: every registered method, whether it trains, its defaults and its
presets (`fit --preset NAME`); with a NAME, every option of that method (default, constraint, help)
and what each preset sets."""

from __future__ import annotations

import json
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    app.command("methods")(list_methods)


def list_methods(
    name: str | None = typer.Argument(
        None, metavar="NAME", help="A method: list each of its options with constraint and help."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (a list; with NAME, one object)."),
) -> None:
    """List the clustering methods with their descriptions and default options, or one method's options."""
    if name is not None:
        _describe_method(name, as_json)
        return
    import dataclasses

    from clusterkit.methods.registry import available_methods

    rows = []
    for method, cls in available_methods().items():
        defaults = {f.name: f.default for f in dataclasses.fields(cls.Config)}
        rows.append(
            {
                "name": method,
                "description": cls.description,
                "uses_engine": cls.uses_engine,
                "auto_k": cls.supports_auto_k,
                "defaults": defaults,
                "presets": {preset: dict(values) for preset, values in cls.Config.presets.items()},
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    for row in rows:
        flags = ", ".join(f for f, on in (("trains in epochs", row["uses_engine"]), ("--k auto", row["auto_k"])) if on)
        typer.echo(f"{row['name']:<12} {row['description']}" + (f" [{flags}]" if flags else ""))
        typer.echo(" " * 13 + " ".join(f"{k}={v}" for k, v in row["defaults"].items()))
        for preset, values in row["presets"].items():
            typer.echo(" " * 13 + f"--preset {preset}: " + _assignments(values))


def _describe_method(name: str, as_json: bool) -> None:
    """One method's options as a table (plain text, readable when piped) or a JSON object."""
    from clusterkit.config import describe_options
    from clusterkit.methods.registry import get_method_class

    cls = get_method_class(name)  # unknown name: InputError, exit 2
    options = describe_options(cls.Config)
    presets = {preset: dict(values) for preset, values in cls.Config.presets.items()}
    if as_json:
        described = {"name": cls.name, "description": cls.description, "options": options, "presets": presets}
        typer.echo(json.dumps(described, indent=1))
        return
    typer.echo(f"{cls.name}: {cls.description}")
    typer.echo("options (--set KEY=VALUE):")
    rows = [("option", "default", "constraint", "help")]
    rows += [(o["name"], _shown(o["default"]), o["constraint"] or "-", o["help"]) for o in options]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        typer.echo(
            "  " + "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        )
    typer.echo("presets (--preset NAME; under --config, the flags and --set):" if presets else "presets: none")
    for preset, values in presets.items():
        typer.echo(f"  {preset}: {_assignments(values)}")


def _assignments(values: dict[str, Any]) -> str:
    """`epochs=6000 lr=0.001`, values as `--set` takes them."""
    return " ".join(f"{key}={_shown(value)}" for key, value in values.items())


def _shown(value: Any) -> str:
    """A default as it is written in `--set` and YAML: null, true, false, 1e-04."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
