"""Text input files (ticks, bars, controls): the one reader every input path uses.

Conventions, the same for every caller so the per-event and batched paths see the same lines:

- gzip data must be named ``*.gz`` and ``*.gz`` must be gzip data (recognised by its magic
  bytes); a truncated or corrupt gzip stream is a usage error naming the file;
- UTF-8; an undecodable byte becomes U+FFFD, so one bad byte spoils one line (normalize
  dead-letters it as ``BAD_ENCODING``), not the file; a leading byte-order mark is dropped;
- lines end in ``\\n``, ``\\r\\n`` or a lone ``\\r`` (old Mac exports); a final terminator is
  optional;
- ``SourceRef.line`` numbers are 1-based physical lines, as a text editor shows them.

Files of any size are read in blocks of whole lines (``iter_line_blocks``), so memory does
not grow with the file; ``read_text`` / ``read_lines`` (the whole file) are for small files
(controls, tests).
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from jobs.errors import UsageError

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16
BLOCK_BYTES = 1 << 21
"""Default size of a block of lines (``iter_line_blocks``): about 60,000 E-mini rows."""
_BOM = b"\xef\xbb\xbf"
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


def check_gzip(path: str | Path) -> None:
    """Decompress a gzip file once, discarding the data, so that a truncated or corrupt one
    is a ``UsageError`` before a replay starts rather than when the stream reaches the damage
    (nothing for a plain file)."""
    p = Path(path)
    with p.open("rb") as f:
        if not _is_gzip(p, f.read(2)):
            return
    try:
        with gzip.open(p, "rb") as g:
            while g.read(BLOCK_BYTES * 4):
                pass
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


@dataclass(frozen=True, slots=True)
class LineBlock:
    """Whole physical lines of a file, as bytes: line terminators are ``\\n`` (``\\r\\n``
    and a lone ``\\r`` are rewritten), the byte-order mark is gone, nothing is decoded.

    ``first_line`` is the 1-based number of the first line; every line ends in ``\\n`` except
    perhaps the last one of the file.
    """

    first_line: int
    data: bytes

    def lines(self) -> list[str]:
        """The block's lines decoded as ``read_lines`` decodes them (U+FFFD for bad bytes)."""
        return split_lines(self.data.decode("utf-8", errors="replace"))


def _normalize_newlines(raw: bytes) -> bytes:
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return raw


def _open_binary(p: Path) -> io.BufferedIOBase:
    """The file's bytes as a stream, decompressing gzip (checked by name and magic)."""
    with p.open("rb") as f:
        head = f.read(2)
    if _is_gzip(p, head):
        return gzip.open(p, "rb")
    return p.open("rb")


def iter_line_blocks(path: str | Path, *, block_bytes: int | None = BLOCK_BYTES,
                     max_lines: int | None = None) -> Iterator[LineBlock]:
    """The file in blocks of whole lines, each about ``block_bytes`` long (None: one block).

    Blocks are cut only after a line terminator, so a multi-byte UTF-8 sequence or a ``\\r\\n``
    pair is never split, and decoding block by block equals decoding the whole file.
    ``max_lines`` caps the lines per block too (small values make chunking visible in tests).
    Truncated or corrupt gzip data is a ``UsageError`` when the reader reaches it.
    """
    if block_bytes is not None and block_bytes < 1:
        raise ValueError(f"block_bytes must be >= 1, got {block_bytes}")
    if max_lines is not None and max_lines < 1:
        raise ValueError(f"max_lines must be >= 1, got {max_lines}")
    p = Path(path)
    line = 1
    carry = b""
    first = True
    with _open_binary(p) as f:
        while True:
            try:
                raw = f.read(block_bytes if block_bytes is not None else -1)
            except _GZIP_ERRORS as exc:
                raise _corrupt(p, exc) from None
            eof = not raw or block_bytes is None
            if first:
                first = False
                if raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                elif len(raw) < len(_BOM) and _BOM.startswith(raw) and not eof:
                    raw += f.read(len(_BOM))  # a tiny first read: complete the mark first
                    raw = raw.removeprefix(_BOM)
            buf = carry + raw
            held = b""
            if not eof and buf.endswith(b"\r"):
                buf, held = buf[:-1], b"\r"  # a "\r\n" may be split across reads
            buf = _normalize_newlines(buf)
            cut = len(buf) if eof else buf.rfind(b"\n") + 1  # the last line may go on
            data, carry = buf[:cut], buf[cut:] + held
            for piece in _by_lines(data, max_lines):
                yield LineBlock(line, piece)
                line += piece.count(b"\n")
            if eof:
                return


def iter_data_lines(path: str | Path, *, header: bool = False,
                    block_bytes: int | None = BLOCK_BYTES, max_lines: int | None = None
                    ) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every non-blank line, streamed; ``header=True`` skips the
    first one (a CSV header) and raises ``ValueError`` when there is none."""
    skip = header
    for block in iter_line_blocks(path, block_bytes=block_bytes, max_lines=max_lines):
        first = block.first_line
        for i, line in enumerate(block.lines()):
            if line.strip():
                if skip:
                    skip = False
                    continue
                yield first + i, line
    if skip:
        raise ValueError("the file has no header line")


def _by_lines(data: bytes, max_lines: int | None) -> Iterator[bytes]:
    """``data`` in pieces of at most ``max_lines`` lines (one piece when None)."""
    if not data:
        return
    if max_lines is None:
        yield data
        return
    start = 0
    while start < len(data):
        end = start
        for _ in range(max_lines):
            nl = data.find(b"\n", end)
            if nl < 0:
                end = len(data)
                break
            end = nl + 1
            if end == len(data):
                break
        yield data[start:end]
        start = end


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


__all__ = ["BLOCK_BYTES", "GZIP_MAGIC", "LineBlock", "check_columns", "check_gzip", "first_line",
           "head_lines", "iter_data_lines", "iter_line_blocks", "read_lines", "read_text",
           "split_lines"]
