"""A run's output directory and its provenance: ``--out`` handling, run status, input hashes.

A run writes only the files listed in its manifest (``outputs``), and the manifest is written
first, with status ``running``, then updated to ``complete``, ``interrupted`` or ``failed``.
That makes two promises checkable:

- ``--force`` (and the automatic replacement of an incomplete run) removes only what a previous
  run's manifest says it wrote: a directory without a run manifest is never cleared, and an
  input of the new run (tick file, ``--models`` bundle, ``--risk``, ``--control``,
  ``--instruments``) is never removed, even when it sits inside ``--out``;
- every output path is checked before the run starts: no output may be an input, a directory
  where a file goes, or unwritable.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from jobs import data
from jobs.errors import UsageError
from jobs.loaders.registry import write_atomic

MANIFEST = "manifest.json"
RUN_COMMAND = "streamquant run"
FIXED_OUTPUTS = (MANIFEST, "equity.csv", "trades.csv", "report.html")
MODELS_DIR = "models"
DATABASE_DIRS = ("clickhouse", "clickhouse-spill")
"""The embedded ClickHouse database of a run and the batches its sink could not write."""
DIR_OUTPUTS = (MODELS_DIR, *DATABASE_DIRS)
INCOMPLETE = ("running", "interrupted", "failed")


def _topic_names() -> tuple[str, ...]:
    from topics.catalog import CATALOG

    return tuple(sorted(CATALOG))


@dataclass(frozen=True, slots=True)
class RunPaths:
    """What one run reads and writes; ``inputs`` are ``(flag, path)`` pairs."""

    out: Path
    inputs: tuple[tuple[str, Path], ...]
    summary_json: Path | None = None
    trains: bool = False  # writes a model bundle to <out>/models

    def relative_outputs(self) -> tuple[str, ...]:
        """Every path under ``out`` this run may write (the manifest's ``outputs``)."""
        rel = [*FIXED_OUTPUTS, *(f"topics/{t}.jsonl" for t in _topic_names()), *DATABASE_DIRS]
        if self.trains:
            rel.append(MODELS_DIR)
        if self.summary_json is not None:
            inside = _relative_to(self.summary_json, self.out)
            if inside is not None:
                rel.append(inside)
        return tuple(dict.fromkeys(rel))


def _resolve(p: Path) -> Path:
    return Path(os.path.realpath(p))


def _relative_to(p: Path, root: Path) -> str | None:
    try:
        return _resolve(p).relative_to(_resolve(root)).as_posix()
    except ValueError:
        return None


def _within(p: Path, root: Path) -> bool:
    """``p`` is ``root`` or inside it (both resolved)."""
    return p == root or root in p.parents


def _writable_dir(p: Path) -> Path | None:
    """The nearest existing ancestor of ``p`` if a process can create entries there."""
    q = p
    while not q.exists():
        if q.parent == q:
            return None
        q = q.parent
    if not q.is_dir():
        return None
    return q if os.access(q, os.W_OK | os.X_OK) else None


def check_run_paths(paths: RunPaths) -> None:
    """Refuse a run whose outputs would overwrite an input or cannot be written (exit 2)."""
    out = paths.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if _writable_dir(out) is None:
        raise UsageError(f"--out {out} cannot be created or written")
    inputs = [(flag, p, _resolve(p)) for flag, p in paths.inputs]
    rel = paths.relative_outputs()
    for name in rel:
        target = out / name
        if name not in DIR_OUTPUTS and target.is_dir():
            raise UsageError(f"{target} is a directory; the run writes a file there")
        rt = _resolve(target)
        for flag, p, rp in inputs:
            if rp == rt or (name in DIR_OUTPUTS and _within(rp, rt)):
                raise UsageError(f"{flag} {p} would be overwritten by this run's output {target};"
                                 " choose another --out")
    sj = paths.summary_json
    if sj is not None:
        rs = _resolve(sj)
        for flag, p, rp in inputs:
            if _within(rs, rp):
                raise UsageError(f"--summary-json {sj} is an input of this run ({flag} {p})")
        if sj.is_dir():
            raise UsageError(f"--summary-json {sj} is a directory")
        others = RunPaths(out, paths.inputs, None, paths.trains).relative_outputs()
        inside = _relative_to(sj, out)
        if inside is not None and any(inside == o or inside.startswith(o + "/")
                                      for o in others):
            raise UsageError(f"--summary-json {sj} is another output of this run ({inside})")
        if sj.exists() and not os.access(sj, os.W_OK):
            raise UsageError(f"--summary-json {sj} is not writable")
        if _writable_dir(sj.parent) is None:
            raise UsageError(f"--summary-json {sj}: its directory cannot be created or written")


def read_run_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of a previous ``streamquant run`` in ``out``, or None if there is none."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("command") != RUN_COMMAND:
        return None
    return doc


def _previous_outputs(out: Path, manifest: dict[str, Any]) -> list[str]:
    """The relative paths a previous run wrote (derived for manifests that predate
    ``outputs``: the fixed files, its topics, and ``models`` when it trained there)."""
    listed = manifest.get("outputs")
    if isinstance(listed, list):
        names = [n for n in listed if isinstance(n, str)]
    else:
        names = [*FIXED_OUTPUTS,
                 *(f"topics/{t}.jsonl" for t in manifest.get("topics", []) if isinstance(t, str))]
        models = (manifest.get("config") or {}).get("models")
        if isinstance(models, str) and _resolve(Path(models)) == _resolve(out / MODELS_DIR):
            names.append(MODELS_DIR)
    safe = []
    for n in names:
        pp = PurePosixPath(n)
        if n and not pp.is_absolute() and ".." not in pp.parts:
            safe.append(n)
    return safe


def _alive(manifest: dict[str, Any]) -> bool:
    pid = manifest.get("pid")
    if not isinstance(pid, int) or manifest.get("host") != socket.gethostname():
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_out(paths: RunPaths, force: bool) -> list[Path]:
    """Make ``--out`` ready: new, empty, or a previous run's output that may be replaced.

    A complete previous run is replaced only with ``force``; an incomplete one (running and
    dead, interrupted, failed) without it. Only the previous run's listed outputs are
    removed, never an input; returns what was removed.
    """
    out = paths.out
    if not out.exists():
        out.mkdir(parents=True)
        return []
    if not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if not any(out.iterdir()):
        return []
    manifest = read_run_manifest(out)
    if manifest is None:
        hint = ("--force only replaces a previous run's output: nothing was deleted"
                if force else "choose a new or empty directory")
        raise UsageError(f"--out {out} is not empty and holds no previous run ({MANIFEST} "
                         f"of '{RUN_COMMAND}'); {hint}")
    status = manifest.get("status", "complete")
    if status not in INCOMPLETE and not force:
        raise UsageError(f"--out {out} is not empty: it holds a complete run (use --force to "
                         "replace it)")
    if status == "running" and _alive(manifest) and not force:
        raise UsageError(f"--out {out}: run pid {manifest['pid']} is still writing there "
                         "(use --force if it is not)")
    protected = [_resolve(p) for _, p in paths.inputs]
    removed = []
    for name in _previous_outputs(out, manifest):
        target = out / name
        if not target.is_symlink() and not target.exists():
            continue
        rt = _resolve(target) if not target.is_symlink() else _resolve(target.parent) / target.name
        if any(_within(rp, rt) or _within(rt, rp) for rp in protected):
            continue  # an input of this run (or holds one): never removed
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
        removed.append(target)
    topics = out / "topics"
    if topics.is_dir() and not topics.is_symlink() and not any(topics.iterdir()):
        topics.rmdir()
    return removed


class RunRecord:
    """The manifest as the run goes: written at start (``running``), updated at the end."""

    def __init__(self, paths: RunPaths, fields: dict[str, Any]) -> None:
        self.path = paths.out / MANIFEST
        self.doc: dict[str, Any] = {
            "command": RUN_COMMAND, "status": "running", "pid": os.getpid(),
            "host": socket.gethostname(), "outputs": list(paths.relative_outputs()),
            "inputs": {flag: str(p) for flag, p in paths.inputs}, **fields}
        self._write()

    def update(self, **fields: Any) -> None:
        self.doc.update(fields)

    def close(self, status: str, **fields: Any) -> None:
        self.doc.update(fields, status=status)
        self._write()

    def _write(self) -> None:
        write_atomic(self.path, (json.dumps(self.doc, indent=2, sort_keys=True) + "\n").encode())


def input_paths(pairs: Iterable[tuple[str, Path | None]]) -> tuple[tuple[str, Path], ...]:
    return tuple((flag, p) for flag, p in pairs if p is not None)


def sha256_of(path: Path) -> str:
    return data.sha256_file(path)


def code_version() -> str:
    """The package version plus the git commit when run from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("streamquant")
    except PackageNotFoundError:
        v = "0+unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, check=False, cwd=Path(__file__).parent, timeout=5)
        if rev.returncode == 0 and rev.stdout.strip():
            v += "+g" + rev.stdout.strip()
    return v
