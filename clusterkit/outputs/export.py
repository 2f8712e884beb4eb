"""`export`: a run's images sorted into one folder per cluster (DEST/<cluster>/<name>), as symbolic
links, copies or moved files.

An export is planned, then carried out. The plan (each source's target name) is saved in DEST
(`JOURNAL_NAME`) before any file is touched, so that a re-run after a crash, Ctrl-C or kill -9 follows
the same plan even after sources were moved away, recognizes what is already in place, removes the
temporary files left behind, and finishes the rest. No step replaces a file: a name is given by
`os.symlink` or `os.link`, which fail where the name exists, and a source is removed only once its
file is in place under the target name (across file systems: copied, flushed to disk and checked
against the SHA-256 the plan recorded before).
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import json
import os
import shutil
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import count
from pathlib import Path, PurePosixPath
from typing import Any

from clusterkit.errors import InputError
from clusterkit.io import atomic_write_json, file_sha256, is_atomic_temp
from clusterkit.outputs.assignments import read_assignments
from clusterkit.outputs.run import ASSIGNMENTS_NAME, CONFIG_NAME, RunFolder

MODES = ("link", "copy", "move")
JOURNAL_NAME = ".clusterkit-export.json"
JOURNAL_VERSION = 1
TEMP_SUFFIX = ".clusterkit-tmp"

# What an entry needs (a dry run) or got (a run). The first four change files; the others do not.
LINK, COPY, MOVE, FINISH = "link", "copy", "move", "finish"  # finish: an interrupted move; remove the source
DONE, MISSING, CONFLICT, REFUSED, FAILED = "done", "missing", "conflict", "refused", "failed"
CHANGES = (LINK, COPY, MOVE, FINISH)
PROBLEMS = (MISSING, CONFLICT, REFUSED, FAILED)


@dataclass
class Entry:
    """One image: its absolute `source` path and its `target`, relative to DEST. For --move, the source
    as last seen (`size`, `inode`; `sha256` where it is copied across file systems), by which a re-run
    knows the file at the target is the source when the source is gone."""

    source: str
    target: str
    size: int | None = None
    inode: int | None = None
    sha256: str | None = None


@dataclass
class Plan:
    """Where each image of a run goes; `assignments_sha256` ties a saved plan to the assignments it was
    made from, so a re-run after a new fit does not follow a stale plan."""

    dest: Path
    mode: str
    run: str
    assignments_sha256: str
    entries: list[Entry]

    @property
    def journal(self) -> Path:
        return self.dest / JOURNAL_NAME


@dataclass
class Outcome:
    entry: Entry
    action: str
    reason: str = ""


@dataclass
class Summary:
    dest: Path
    mode: str
    dry_run: bool
    outcomes: list[Outcome] = field(default_factory=list)
    temps_removed: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(o.action for o in self.outcomes))

    @property
    def problems(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.action in PROBLEMS]

    def to_json(self) -> dict[str, Any]:
        """The summary for `--json`; a dry run adds the whole plan."""
        result: dict[str, Any] = {
            "dest": str(self.dest),
            "mode": self.mode,
            "dry_run": self.dry_run,
            "images": len(self.outcomes),
            "counts": self.counts,
            "temps_removed": self.temps_removed,
            "problems": [_outcome_json(self.dest, o) for o in self.problems],
        }
        if self.dry_run:
            result["plan"] = [_outcome_json(self.dest, o) for o in self.outcomes]
        return result


def _outcome_json(dest: Path, outcome: Outcome) -> dict[str, str]:
    row = {"source": outcome.entry.source, "target": str(dest / outcome.entry.target), "action": outcome.action}
    return row | ({"reason": outcome.reason} if outcome.reason else {})


# --- planning -------------------------------------------------------------------------------
def plan_export(run_dir: str | Path, dest: str | Path, mode: str) -> Plan:
    """The plan saved in DEST by an earlier export of the same assignments with the same mode (to
    finish it), or a new one. Bad input (not a run, a built-in source, DEST a file) is an InputError."""
    if mode not in MODES:
        raise InputError(f"unknown export mode {mode!r}; choose {', '.join(MODES)}")
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise InputError(f"cannot export into {dest}: it is a file, not a folder")
    root, clusters, digest = read_run(Path(run_dir))
    saved = read_journal(dest)
    if saved is not None:
        _check_resumable(saved, mode, digest)
        return saved
    entries = _assign_targets(root, clusters, dest, mode)
    return Plan(dest, mode, str(Path(run_dir).resolve()), digest, entries)


def read_run(run_dir: Path) -> tuple[Path, dict[str, str], str]:
    """The folder the run's image names are relative to, each name's cluster, and the SHA-256 of the
    assignments file."""
    run = RunFolder(run_dir)
    if not run.is_run():
        raise InputError(f"{run_dir} is not a clusterkit run (no {CONFIG_NAME})")
    root = run.source_root()
    if root is None:
        name = str(run.read_metrics()["source"]).removeprefix("builtin:")
        raise InputError(
            f"{run_dir} was fit on builtin:{name}, whose images are not files: write them as files with "
            f"`clusterkit datasets export {name} DIR`, fit on DIR and export that run"
        )
    if not run.assignments.is_file():
        raise InputError(f"{run_dir} holds no {ASSIGNMENTS_NAME}: the fit did not finish")
    digest = file_sha256(run.assignments)
    return root, read_assignments(str(run.assignments)), digest


def _check_resumable(saved: Plan, mode: str, digest: str) -> None:
    if saved.mode != mode:
        raise InputError(
            f"{saved.dest} holds an export made with --{saved.mode}; run it again with --{saved.mode} to "
            "finish it, or choose another DEST"
        )
    if saved.assignments_sha256 != digest:
        raise InputError(
            f"{saved.dest} holds an export of other assignments (of run {saved.run}); choose another DEST, "
            f"or remove {saved.journal} if that export is finished"
        )


def _assign_targets(root: Path, clusters: dict[str, str], dest: Path, mode: str) -> list[Entry]:
    """Each image's target, in the assignments' order: its base name in its cluster's folder, or the
    first free `stem-N.suffix` (N = 2, 3, ...) when an earlier image took the name (compared without
    case, for case-insensitive file systems) or another file is there. A file there that already is
    this image's export keeps the name."""
    for cluster in sorted(set(clusters.values())):
        _check_cluster_folder(dest, cluster)
    taken: set[str] = set()
    entries = []
    for path, cluster in clusters.items():
        source = str(root / path)  # an absolute entry of a list stays itself
        entry = next(
            Entry(source, target)
            for target in (f"{cluster}/{name}" for name in _candidates(path.rsplit("/", 1)[-1]))
            if target.casefold() not in taken and _is_free(Entry(source, target), dest, mode)
        )
        taken.add(entry.target.casefold())
        entries.append(entry)
    return entries


def _check_cluster_folder(dest: Path, cluster: str) -> None:
    if cluster in ("", ".", "..") or "/" in cluster or "\0" in cluster:
        raise InputError(f"cluster {cluster!r} cannot be a folder name; the assignments file is not from `fit`")
    folder = dest / cluster
    if os.path.lexists(folder) and not folder.is_dir():
        raise InputError(f"cannot export into {folder}: it is a file, not a folder")


def _candidates(name: str) -> Iterator[str]:
    yield name
    pure = PurePosixPath(name)
    for n in count(2):
        yield f"{pure.stem}-{n}{pure.suffix}"


def _is_free(entry: Entry, dest: Path, mode: str) -> bool:
    """No file at the target, or this image's export already. Not a look-alike for a move (FINISH would
    remove the source because of a file this export did not put there, maybe another image's source)."""
    return not os.path.lexists(dest / entry.target) or next_action(entry, dest, mode)[0] == DONE


# --- the journal ------------------------------------------------------------------------------
def read_journal(dest: Path) -> Plan | None:
    """The plan an earlier export saved in `dest`, if any."""
    path = dest / JOURNAL_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != JOURNAL_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {JOURNAL_VERSION}")
        entries = [Entry(**row) for row in data["entries"]]
        return Plan(dest, data["mode"], data["run"], data["assignments_sha256"], entries)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(
            f"{path} is not a readable export plan ({exc}); remove it if the export it records is finished"
        ) from None


def _write_journal(plan: Plan) -> None:
    entries = [{k: v for k, v in asdict(e).items() if v is not None} for e in plan.entries]
    data = {
        "version": JOURNAL_VERSION,
        "mode": plan.mode,
        "run": plan.run,
        "assignments_sha256": plan.assignments_sha256,
        "entries": entries,
    }
    atomic_write_json(plan.journal, data)


# --- the state of one entry -------------------------------------------------------------------
def next_action(entry: Entry, dest: Path, mode: str) -> tuple[str, str]:
    """What `entry` needs now, read from the file system (and, for a move whose source is gone, the
    entry's record of it), with the reason where nothing can be done."""
    source, target = Path(entry.source), dest / entry.target
    if mode == "link":
        return _link_action(source, target)
    if mode == "copy":
        return _copy_action(source, target)
    return _move_action(entry, source, target)


def _link_action(source: Path, target: Path) -> tuple[str, str]:
    if not source.exists():
        return MISSING, "source file not found"
    if target.is_symlink() and os.readlink(target) == str(source):
        return DONE, ""
    if os.path.lexists(target):
        return CONFLICT, "another file is at the target"
    return LINK, ""


def _copy_action(source: Path, target: Path) -> tuple[str, str]:
    if not source.is_file():
        return MISSING, "source file not found"
    if not os.path.lexists(target):
        return COPY, ""
    if not target.is_symlink() and target.is_file() and filecmp.cmp(source, target, shallow=False):
        return DONE, ""
    return CONFLICT, "another file is at the target"


def _move_action(entry: Entry, source: Path, target: Path) -> tuple[str, str]:
    src, tgt = _lstat(source), _lstat(target)
    if src is None:
        if tgt is not None and _is_moved_source(entry, tgt, target):
            return DONE, ""
        return MISSING, "source file not found" + (", and the file at the target is another" if tgt else "")
    if not stat.S_ISREG(src.st_mode):
        return REFUSED, "not a regular file (a symbolic link?): not moved; export it with --copy or --link"
    if tgt is None:
        return MOVE, ""
    if _same_entry(source, target):
        return DONE, ""
    if stat.S_ISREG(tgt.st_mode) and (os.path.samestat(src, tgt) or filecmp.cmp(source, target, shallow=False)):
        return FINISH, ""
    return CONFLICT, "another file is at the target"


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _same_entry(a: Path, b: Path) -> bool:
    """Whether two paths name the same directory entry (DEST inside the source folder), not two names
    of one file: removing either would remove the file."""
    return a.name == b.name and os.path.samefile(a.parent, b.parent)


def _is_moved_source(entry: Entry, tgt: os.stat_result, target: Path) -> bool:
    """Whether the file at the target is the entry's source, moved: its size, and its inode (a rename
    keeps it) or, copied across file systems, its content."""
    if not stat.S_ISREG(tgt.st_mode) or entry.size is None or tgt.st_size != entry.size:
        return False
    return file_sha256(target) == entry.sha256 if entry.sha256 else tgt.st_ino == entry.inode


# --- carrying out -----------------------------------------------------------------------------
def dry_run(plan: Plan) -> Summary:
    """What an export would do, touching nothing."""
    summary = Summary(plan.dest, plan.mode, dry_run=True)
    for entry in plan.entries:
        summary.outcomes.append(Outcome(entry, *next_action(entry, plan.dest, plan.mode)))
    return summary


def execute(plan: Plan, advance: Callable[[], None] = lambda: None) -> Summary:
    """Save the plan, then bring each entry into place; `advance` is called after each. Problems with
    single files (missing, blocked, failed) are in the summary; the other files are still exported."""
    _prepare_folders(plan)
    if plan.mode == "move":
        _record_sources(plan)
    _write_journal(plan)
    summary = Summary(plan.dest, plan.mode, dry_run=False)
    for entry in plan.entries:
        summary.temps_removed += _remove_temp(plan.dest / entry.target)
        summary.outcomes.append(_carry_out(plan, entry))
        advance()
    return summary


def _prepare_folders(plan: Plan) -> None:
    """DEST and its cluster folders; a temporary of the journal that a killed write left is removed."""
    folders = {plan.dest / PurePosixPath(e.target).parent for e in plan.entries} | {plan.dest}
    try:
        for folder in sorted(folders):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {exc.filename}: {exc.strerror or exc}") from None
    for path in plan.dest.iterdir():
        if is_atomic_temp(path.name, JOURNAL_NAME):
            path.unlink(missing_ok=True)


def _record_sources(plan: Plan) -> None:
    """Record each source still in place (size, inode; content where it goes to another file system)
    before anything moves, so that a later run recognizes it at its target once the source is gone."""
    for entry in plan.entries:
        src = _lstat(Path(entry.source))
        if src is None or not stat.S_ISREG(src.st_mode):
            continue
        entry.size, entry.inode, entry.sha256 = src.st_size, src.st_ino, None
        if not _same_filesystem(Path(entry.source), (plan.dest / entry.target).parent):
            with contextlib.suppress(OSError):  # unreadable: its copy fails, and says why
                entry.sha256 = file_sha256(Path(entry.source))


def _same_filesystem(path: Path, folder: Path) -> bool:
    return os.stat(path).st_dev == os.stat(folder).st_dev


def _carry_out(plan: Plan, entry: Entry) -> Outcome:
    try:
        action, reason = next_action(entry, plan.dest, plan.mode)
        if action in CHANGES:
            _change(action, entry, Path(entry.source), plan.dest / entry.target)
    except OSError as exc:
        return Outcome(entry, FAILED, exc.strerror or str(exc))
    return Outcome(entry, action, reason)


def _change(action: str, entry: Entry, source: Path, target: Path) -> None:
    if action == LINK:
        os.symlink(source, target)
    elif action == COPY:
        _place(_copy_to_temp(source, target, durable=False), target)
    elif action == MOVE and not _same_filesystem(source, target.parent):
        _move_across(entry, source, target)
    elif action == MOVE:
        _place(source, target)
    else:
        _remove_source(source)


def _move_across(entry: Entry, source: Path, target: Path) -> None:
    """A move to another file system: copy to a temporary name beside the target, flush it, check it
    against the recorded size and SHA-256, give it the target name, and only then remove the source."""
    tmp = _copy_to_temp(source, target, durable=True)
    try:
        if entry.sha256 is None or tmp.stat().st_size != entry.size or file_sha256(tmp) != entry.sha256:
            raise OSError(errno.EIO, "the copy differs from the source; the source is kept")
        _place(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(target.parent)
    _remove_source(source)


def _remove_source(source: Path) -> None:
    """The last step of a move, a name of its own so that tests can stop an export just before it."""
    os.unlink(source)


def _temp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}{TEMP_SUFFIX}")


def _remove_temp(target: Path) -> int:
    """Remove the temporary copy a killed export left for `target` (1 if there was one). It is never
    the only copy: a source is removed only after its temporary became the target."""
    tmp = _temp_path(target)
    if not os.path.lexists(tmp):
        return 0
    tmp.unlink()
    return 1


def _copy_to_temp(source: Path, target: Path, durable: bool) -> Path:
    """`source` copied (content, times, mode: shutil.copy2) to the target's temporary name; `durable`:
    flushed to disk, for a move that will remove the source."""
    tmp = _temp_path(target)
    try:
        shutil.copy2(source, tmp)
        if durable:
            _fsync(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _place(path: Path, target: Path) -> None:
    """Give the file at `path` the name `target` and drop the old name, never replacing a file at
    `target`: a hard link fails where the name exists (os.rename would replace it). Where a file system
    has no hard links, an existence check and a rename (a race only with another program writing
    there)."""
    try:
        os.link(path, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "another file is at the target", str(target)) from None
        os.rename(path, target)
        return
    os.unlink(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
