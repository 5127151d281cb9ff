"""Text input files (ticks, bars, controls): the one reader every input path uses.

Conventions, the same for every caller so the per-event and batched paths see the same lines:

- gzip is recognised by its magic bytes (``.gz`` files and gzip data under any name);
- UTF-8; an undecodable byte becomes U+FFFD, so one bad byte spoils one line, not the file;
  a leading byte-order mark is dropped;
- lines end in ``\\n`` or ``\\r\\n``; a final line terminator is optional;
- ``SourceRef.line`` numbers are 1-based physical lines, as a text editor shows them.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

from jobs.errors import UsageError

GZIP_MAGIC = b"\x1f\x8b"
_FIRST_CHUNK = 1 << 16


def _decode(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return text[1:] if text.startswith("\ufeff") else text


def read_text(path: str | Path) -> str:
    """A whole text file, decompressed and decoded."""
    p = Path(path)
    raw = p.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        raw = gzip.decompress(raw)
    return _decode(raw)


def split_lines(text: str) -> list[str]:
    """Physical lines without terminators (no empty entry for a final terminator)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_lines(path: str | Path) -> list[str]:
    """All physical lines of a text file (gzip decompressed), without line terminators."""
    return split_lines(read_text(path))


def first_line(path: str | Path) -> tuple[int, str]:
    """The first non-blank line and its 1-based number, reading only as much as needed.

    ``(0, "")`` when the file has no non-blank line.
    """
    p = Path(path)
    with p.open("rb") as f:
        head = f.read(2)
        f.seek(0)
        if head != GZIP_MAGIC:
            return _first_line(f.read)
        with gzip.open(f) as g:
            return _first_line(g.read)


def _first_line(read: Callable[[int], bytes]) -> tuple[int, str]:
    raw = b""
    while True:
        chunk = read(_FIRST_CHUNK)
        raw += chunk
        lines = split_lines(_decode(raw))
        complete = lines if not chunk else lines[:-1]  # the last one may be cut
        for n, line in enumerate(complete, 1):
            if line.strip():
                return n, line
        if not chunk:
            return 0, ""


def check_columns(path: Path, names: tuple[str, ...], allowed: tuple[str, ...],
                  required: tuple[str, ...]) -> None:
    """Refuse a header with missing, unknown or repeated columns, naming them."""
    unknown = [c for c in names if c not in allowed]
    missing = [c for c in required if c not in names]
    dup = sorted({c for c in names if names.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s): {', '.join(unknown)}")
    if dup:
        problems.append(f"duplicate column(s): {', '.join(dup)}")
    if problems:
        optional = [c for c in allowed if c not in required]
        expected = ",".join(required) + (f" [optional: {','.join(optional)}]" if optional else "")
        raise UsageError(f"{path}: {'; '.join(problems)} (expected {expected})")


__all__ = ["GZIP_MAGIC", "check_columns", "first_line", "read_lines", "read_text", "split_lines"]
