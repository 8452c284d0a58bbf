"""Reading a text file the user named (a rule pack, a file it includes): capped, UTF-8.

A pack may include any path, so a device (`/dev/zero`) or a huge file must end in a
clear error rather than a hang or all the memory; a file in another encoding must
name the file rather than end in a traceback.
"""

from __future__ import annotations

from pathlib import Path

MAX_TEXT_BYTES = 16 * 1024 * 1024


def read_text(path: Path, limit: int = MAX_TEXT_BYTES) -> str:
    """The file as UTF-8 text; ValueError saying why not (the caller names the file)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    if len(data) > limit:
        raise ValueError(f"larger than {limit // (1024 * 1024)} MB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})"
        ) from None
