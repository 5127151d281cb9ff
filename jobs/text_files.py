"""Text input files (ticks, bars, controls): the one reader every input path uses.

Conventions, the same for every caller so the per-event and batched paths see the same lines:

- gzip data must be named ``*.gz`` and ``*.gz`` must be gzip data (recognised by its magic
  bytes); a truncated or corrupt gzip stream is a usage error naming the file;
- UTF-8; an undecodable byte becomes U+FFFD, so one bad byte spoils one line (normalize
  dead-letters it as ``BAD_ENCODING``), not the file; a leading byte-order mark is dropped;
- lines end in ``\\n``, ``\\r\\n`` or a lone ``\\r`` (old Mac exports); a final terminator is
  optional;
- ``SourceRef.line`` numbers are 1-based physical lines, as a text editor shows them.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from pathlib import Path

from jobs.errors import UsageError

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16
_GZIP_ERRORS = (EOFError, OSError, zlib.error)  # gzip.BadGzipFile is an OSError


def _decode(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return text[1:] if text.startswith("\ufeff") else text


def _is_gzip(p: Path, head: bytes) -> bool:
    """Whether the file is gzip data, refusing a name that says otherwise."""
    is_gz = head[:2] == GZIP_MAGIC
    named_gz = p.name.lower().endswith(".gz")
    if is_gz and not named_gz:
        raise UsageError(f"{p}: holds gzip-compressed data but is not named *.gz; rename it to "
                         f"{p.name}.gz (or decompress it)")
    if named_gz and not is_gz:
        raise UsageError(f"{p}: is named *.gz but is not gzip data; rename it without .gz")
    return is_gz


def _corrupt(p: Path, exc: BaseException) -> UsageError:
    return UsageError(f"{p}: truncated or corrupt gzip data ({exc}); fetch or compress the "
                      "file again")


def read_text(path: str | Path) -> str:
    """A whole text file, decompressed and decoded."""
    p = Path(path)
    raw = p.read_bytes()
    if _is_gzip(p, raw[:2]):
        try:
            raw = gzip.decompress(raw)
        except _GZIP_ERRORS as exc:
            raise _corrupt(p, exc) from None
    return _decode(raw)


def split_lines(text: str) -> list[str]:
    """Physical lines without terminators (no empty entry for a final terminator)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_lines(path: str | Path) -> list[str]:
    """All physical lines of a text file (gzip decompressed), without line terminators."""
    return split_lines(read_text(path))


def head_lines(path: str | Path, count: int) -> list[tuple[int, str]]:
    """The first ``count`` non-blank lines with their 1-based numbers, reading only the start
    of the file (fewer when the file has fewer)."""
    p = Path(path)
    with p.open("rb") as f:
        head = f.read(2)
        f.seek(0)
        if not _is_gzip(p, head):
            return _head(f.read, count)
        try:
            with gzip.open(f) as g:
                return _head(g.read, count)
        except _GZIP_ERRORS as exc:
            raise _corrupt(p, exc) from None


def first_line(path: str | Path) -> tuple[int, str]:
    """The first non-blank line and its 1-based number; ``(0, "")`` when there is none."""
    found = head_lines(path, 1)
    return found[0] if found else (0, "")


def _head(read: Callable[[int], bytes], count: int) -> list[tuple[int, str]]:
    raw = b""
    while True:
        chunk = read(_CHUNK)
        raw += chunk
        lines = split_lines(_decode(raw))
        complete = lines if not chunk else lines[:-1]  # the last one may be cut
        found = [(n, line) for n, line in enumerate(complete, 1) if line.strip()][:count]
        if len(found) == count or not chunk:
            return found


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


__all__ = ["GZIP_MAGIC", "check_columns", "first_line", "head_lines", "read_lines", "read_text",
           "split_lines"]
