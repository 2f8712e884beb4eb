"""`export` as a library verb: a run's images sorted into DEST/<cluster>/<name> (links, copies or
moves), resumable; the work itself is `outputs/export.py`'s, which knows run folders only."""

from __future__ import annotations

from pathlib import Path

from clusterkit import console
from clusterkit.outputs.export import Summary, dry_run, execute, plan_export


def export_run(run: str | Path, dest: str | Path, mode: str = "link", plan_only: bool = False) -> Summary:
    """Plan the export of `run` into `dest` and carry it out (or, with `plan_only`, say what it would do)."""
    plan = plan_export(Path(run), Path(dest), mode)
    if plan_only:
        return dry_run(plan)
    with console.progress(f"exporting ({plan.mode})", total=len(plan.entries)) as bar:
        return execute(plan, advance=bar.advance)
