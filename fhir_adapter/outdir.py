"""Output directories the adapter owns: a marker says which files are ours.

A directory given as `--out` may hold only what an earlier run of the same command
wrote there (listed in its marker file); anything else is someone else's, and the
directory is refused unless the user forces it. A new run replaces the previous
one completely: its files are staged, then swapped in, and what the previous run
wrote that the new one does not is removed, so a later reader never sees an
earlier job's files beside the new ones. Files that are not ours are never deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson

from fhir_adapter.errors import AdapterError

MARKER = ".fhir-adapter-out.json"
_SHOWN = 3


class OutputDirectoryError(AdapterError):
    """An output directory that is a file, or holds files another program wrote."""


def owned_files(directory: Path, kind: str) -> set[str] | None:
    """The files the marker says `kind` wrote here; None when there is no such marker."""
    try:
        marker = orjson.loads((directory / MARKER).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(marker, dict) or marker.get("written_by") != kind:
        return None
    files = marker.get("files")
    return {str(f) for f in files if isinstance(f, str)} if isinstance(files, list) else set()


def check_output_directory(
    directory: str | os.PathLike[str],
    kind: str,
    *,
    option: str = "--out",
    force: bool = False,
    also_ours: Callable[[str], bool] = lambda _name: False,
) -> set[str]:
    """Refuse `directory` unless it is new, empty or ours; returns the files we wrote there.

    `also_ours`: names the caller keeps beside the listed files (an export's state).
    """
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise OutputDirectoryError(f"{option} {directory} is a file, not a directory")
    if not path.exists():
        return set()
    ours = owned_files(path, kind) or set()
    foreign = sorted(
        rel for rel in _entries(path) if rel != MARKER and rel not in ours and not also_ours(rel)
    )
    if foreign and not force:
        shown = ", ".join(foreign[:_SHOWN]) + (" ..." if len(foreign) > _SHOWN else "")
        raise OutputDirectoryError(
            f"{option} {directory} holds {len(foreign)} file(s) fhir-adapter {kind} did not "
            f"write ({shown}); choose an empty or new directory, or add --force to write "
            "there anyway (those files are left alone)"
        )
    return ours


def _entries(path: Path) -> Iterable[str]:
    """Every file below `path`, relative (a directory counts by what it holds)."""
    for root, dirs, files in os.walk(path):
        base = Path(root).relative_to(path)
        for name in files:
            yield (base / name).as_posix()
        if not dirs and not files and Path(root) != path:
            yield base.as_posix() + "/"


def write_marker(directory: Path, kind: str, files: Iterable[str]) -> None:
    """The marker, replaced atomically: it lists exactly what is ours now."""
    doc = {"written_by": kind, "files": sorted(files)}
    tmp = directory / (MARKER + ".tmp")
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    os.replace(tmp, directory / MARKER)


def swap_in(
    directory: Path,
    staging: Path,
    kind: str,
    previous: set[str],
    names: Iterable[str] | None = None,
) -> list[Path]:
    """Move the files `names` (default: all) of `staging` into `directory`, drop what the
    previous run wrote that this one did not, and write the marker; `staging` is removed.

    Safe to repeat after a crash part-way: a file already moved is not looked for again.
    """
    if names is None:
        names = (p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    new = sorted(names)
    placed = []
    for rel in new:
        final = directory / rel
        if (staging / rel).exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, final)
        placed.append(final)
    for rel in sorted(previous - set(new)):
        stale = directory / rel
        stale.unlink(missing_ok=True)
        _remove_empty_parents(stale.parent, directory)
    write_marker(directory, kind, new)
    shutil.rmtree(staging, ignore_errors=True)
    return placed


def _remove_empty_parents(folder: Path, top: Path) -> None:
    while folder != top and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def publish(
    directory: str | os.PathLike[str],
    kind: str,
    write: Callable[[Path], None],
    *,
    force: bool = False,
) -> list[Path]:
    """Run `write(staging)`, then make its files the whole of our output in `directory`.

    A new directory (or one holding only our previous run) is replaced by renaming the
    staged directory into place, so a reader sees the old run or the new one, never a
    mix; a forced directory keeps its other files and gets ours moved in one by one.
    Nothing lands when `write` fails.
    """
    target = Path(directory)
    previous = check_output_directory(target, kind, force=force)
    whole = not _holds_cwd(target) and (
        not target.exists()
        or (
            owned_files(target, kind) is not None
            and not [r for r in _entries(target) if r != MARKER and r not in previous]
        )
    )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if whole and os.access(target.parent, os.W_OK):
            return _replace_whole(target, kind, write)
        target.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".fhir-adapter-", dir=target))
        try:
            write(staging)
            return swap_in(target, staging, kind, previous)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise AdapterError(f"cannot write to {target}: {exc.strerror or exc}") from None


def _replace_whole(target: Path, kind: str, write: Callable[[Path], None]) -> list[Path]:
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.fhir-adapter-", dir=target.parent))
    old = None
    try:
        write(staging)
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        write_marker(staging, kind, files)
        os.chmod(staging, 0o777 & ~_umask())
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "out")
        try:
            os.replace(staging, target)
        except OSError:
            if old is not None:  # put the previous run back rather than leave nothing
                os.replace(old / "out", target)
            raise
        return [target / f for f in files]
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _holds_cwd(target: Path) -> bool:
    """Whether the process (a user's shell, likely) sits in `target`: it is not renamed."""
    try:
        cwd, resolved = Path.cwd().resolve(), target.resolve()
    except OSError:
        return True
    return cwd == resolved or resolved in cwd.parents


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
