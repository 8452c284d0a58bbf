"""Output directories the adapter owns: a marker says which files are ours.

A directory given as `--out` may hold only what an earlier run of the same command
wrote there (listed in its marker file); anything else is someone else's, and the
directory is refused unless the user forces it. A new run replaces the previous
one completely: its files are staged, then swapped in, and what the previous run
wrote that the new one does not is removed, so a later reader never sees an
earlier job's files beside the new ones. Files that are not ours are never deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

import orjson

from fhir_adapter.errors import AdapterError

MARKER = ".fhir-adapter-out.json"
_SHOWN = 3
_DEPTH = 2  # `errors/NAME` in an export is the deepest our writers go


class OutputDirectoryError(AdapterError):
    """An output directory that is a file, or holds files another program wrote."""


def _marker(directory: Path, kind: str) -> list[object] | None:
    """What the marker lists for `kind` (no list: nothing); None when it is not `kind`'s."""
    try:
        marker = orjson.loads((directory / MARKER).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(marker, dict) or marker.get("written_by") != kind:
        return None
    files = marker.get("files")
    return files if isinstance(files, list) else []


def owned_files(directory: Path, kind: str) -> set[str] | None:
    """The files the marker says `kind` wrote here; None when there is no such marker, or
    when it lists a name that is not a plain file inside `directory` (not ours then)."""
    files = _marker(directory, kind)
    if files is None:
        return None
    names = {f for f in files if isinstance(f, str)}
    return names if all(inside(directory, rel) for rel in names) else None


def inside(directory: Path, rel: str) -> bool:
    """Whether `rel` is a plain relative name (as our writers write) naming a file in
    `directory`: no `..`, no absolute part, no parent that leads elsewhere by a link."""
    path = PurePosixPath(rel)
    if (
        not rel
        or "\\" in rel
        or "\0" in rel
        or path.is_absolute()
        or len(path.parts) > _DEPTH
        or any(part in (".", "..") for part in path.parts)
        or path.as_posix() != rel
    ):
        return False
    try:
        top, parent = directory.resolve(), (directory / rel).parent.resolve()
    except (OSError, RuntimeError):
        return False
    return parent == top or top in parent.parents


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
    if _marker(path, kind) is not None and owned_files(path, kind) is None and not force:
        raise OutputDirectoryError(
            f"{option} {directory}: {path / MARKER} lists files outside the directory, so "
            "it was not written by fhir-adapter; choose an empty or new directory, or add --force "
            "to write there anyway (nothing it lists is removed)"
        )
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
    *,
    last: Iterable[str] = (),
) -> list[Path]:
    """Move the files `names` (default: all) of `staging` into `directory`, drop what the
    previous run wrote that this one did not, and write the marker; `staging` is removed.
    `last` (an index page) moves in only once the stale files are gone, so it never sits
    beside an earlier run's files.

    Safe to repeat after a crash part-way: a file already moved is not looked for again,
    and the marker lists the old and the new files while they are being swapped.
    """
    if names is None:
        names = (p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    new = sorted(names)
    unsafe = [rel for rel in new if not inside(directory, rel)]
    if unsafe:
        raise OutputDirectoryError(f"{directory}: will not write {unsafe[0]!r} outside it")
    write_marker(directory, kind, previous | set(new))
    final_ones = [rel for rel in new if rel in set(last)]
    placed = [_move(staging, directory, rel) for rel in new if rel not in final_ones]
    for rel in sorted(previous - set(new)):
        stale = directory / rel
        stale.unlink(missing_ok=True)
        _remove_empty_parents(stale.parent, directory)
    placed += [_move(staging, directory, rel) for rel in final_ones]
    write_marker(directory, kind, new)
    shutil.rmtree(staging, ignore_errors=True)
    return sorted(placed)


def _move(staging: Path, directory: Path, rel: str) -> Path:
    final = directory / rel
    if (staging / rel).exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, final)
    return final


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
    last: Iterable[str] = (),
    option: str = "--out",
) -> list[Path]:
    """Run `write(staging)`, then make its files the whole of our output in `directory`.

    Files are staged in a folder inside `directory` and swapped in (see `swap_in`); the
    directory itself is never renamed, so a mount point, a symlink to a share and the
    permissions, owner and ACLs the user gave it all stay. Nothing lands when `write`
    fails, and a directory this run made for it is removed again.
    """
    target = Path(directory)
    previous = check_output_directory(target, kind, option=option, force=force)
    made = not target.exists()
    try:
        target.mkdir(parents=True, exist_ok=not made)
        staging = Path(tempfile.mkdtemp(prefix=".fhir-adapter-", dir=target))
        try:
            write(staging)
            return swap_in(target, staging, kind, previous, last=last)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if made:
                with contextlib.suppress(OSError):
                    target.rmdir()
            raise
    except OSError as exc:
        raise AdapterError(f"cannot write to {target}: {exc.strerror or exc}") from None
