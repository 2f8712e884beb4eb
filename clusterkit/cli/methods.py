"""`clusterkit methods`: every registered method, whether it trains, and its defaults."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    app.command("methods")(list_methods)


def list_methods(as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")) -> None:
    """List the clustering methods with their descriptions and default options."""
    import dataclasses

    from clusterkit.methods.registry import available_methods

    rows = []
    for name, cls in available_methods().items():
        defaults = {f.name: f.default for f in dataclasses.fields(cls.Config)}
        rows.append({"name": name, "description": cls.description, "uses_engine": cls.uses_engine,
                     "auto_k": cls.supports_auto_k, "defaults": defaults})
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    for row in rows:
        flags = ", ".join(f for f, on in (("trains in epochs", row["uses_engine"]), ("--k auto", row["auto_k"])) if on)
        typer.echo(f"{row['name']:<12} {row['description']}" + (f" [{flags}]" if flags else ""))
        typer.echo(" " * 13 + " ".join(f"{k}={v}" for k, v in row["defaults"].items()))
