"""`clusterkit export`: a run's images sorted into one folder per cluster, to review in a file browser."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from clusterkit.cli import options

if TYPE_CHECKING:
    from clusterkit.outputs.export import Summary

# How the summary on stderr names each action, in this order; a dry run says "to link" etc.
_PENDING_WORDS = {"link": "to link", "copy": "to copy", "move": "to move", "finish": "to finish (remove the source)"}
_DONE_WORDS = {
    "link": "linked",
    "copy": "copied",
    "move": "moved",
    "finish": "finished (an interrupted move: the source removed)",
    "done": "already in place",
    "missing": "missing",
    "conflict": "blocked by another file at the target",
    "refused": "not moved (not a regular file)",
    "failed": "failed",
}
_SHOWN_PROBLEMS = 10


def register(app: typer.Typer) -> None:
    app.command("export", no_args_is_help=True)(export)


def export(
    run: Path = typer.Argument(..., metavar="RUN", help="Run folder written by `fit`."),
    dest: Path = typer.Argument(..., metavar="DEST", help="Folder for DEST/<cluster>/<name>; created if needed."),
    link: bool = typer.Option(False, "--link", help="Symbolic links to the images, absolute (the default)."),
    copy: bool = typer.Option(False, "--copy", help="Copies of the images."),
    move: bool = typer.Option(
        False, "--move", help="Move the images; never overwrites; an interrupted move finishes when run again."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, one line per image; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary (with --dry-run, the plan) on stdout."),
    quiet: bool = options.QUIET,
) -> None:
    """Sort the images of RUN into DEST/<cluster>/<name>: names kept, clashes named NAME-2, NAME-3, ...
    Running the same command again finishes an interrupted export."""
    from clusterkit import console
    from clusterkit.workflows.export import export_run

    console.set_quiet(quiet)
    summary = export_run(run, dest, _mode(link, copy, move), plan_only=dry_run)
    if hasattr(sys.stdout, "reconfigure"):  # file names that are not UTF-8 go out as their own bytes
        sys.stdout.reconfigure(errors="surrogateescape")
    if as_json:
        typer.echo(json.dumps(summary.to_json()))
    elif dry_run:
        for outcome in summary.outcomes:
            typer.echo(f"{outcome.action:<8} {outcome.entry.source} -> {dest / outcome.entry.target}")
    console.info(_summary_line(summary))
    _report_problems(summary)


def _mode(link: bool, copy: bool, move: bool) -> str:
    from clusterkit.errors import InputError

    chosen = [name for name, flag in (("link", link), ("copy", copy), ("move", move)) if flag]
    if len(chosen) > 1:
        raise InputError(f"choose one of --link, --copy, --move (got --{' and --'.join(chosen)})")
    return chosen[0] if chosen else "link"


def _summary_line(summary: Summary) -> str:
    counts = summary.counts
    words = _DONE_WORDS | (_PENDING_WORDS if summary.dry_run else {})
    parts = [f"{counts[action]} {word}" for action, word in words.items() if counts.get(action)]
    if summary.temps_removed:
        parts.append(f"{summary.temps_removed} leftover temporary files removed")
    head = "dry run, nothing changed; " if summary.dry_run else "exported "
    return f"{head}{len(summary.outcomes)} images into {summary.dest}: {', '.join(parts)}"


def _report_problems(summary: Summary) -> None:
    """A warning for each of the first few files not exported, then one error line (exit 2)."""
    from clusterkit import console
    from clusterkit.errors import InputError

    problems = summary.problems
    if not problems:
        return
    for outcome in problems[:_SHOWN_PROBLEMS]:
        console.warn(f"{outcome.entry.source} -> {summary.dest / outcome.entry.target}: {outcome.reason}")
    if len(problems) > _SHOWN_PROBLEMS:
        console.warn(f"... and {len(problems) - _SHOWN_PROBLEMS} more (--json lists them all)")
    counts = summary.counts
    kinds = ", ".join(
        f"{counts[a]} {_DONE_WORDS[a]}" for a in ("missing", "conflict", "refused", "failed") if a in counts
    )
    verb = "would not be exported" if summary.dry_run else "were not exported"
    raise InputError(
        f"{len(problems)} of {len(summary.outcomes)} images {verb} ({kinds}); the others "
        f"{'would be' if summary.dry_run else 'were'}; fix these and run the same command again"
    )
