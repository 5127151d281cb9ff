"""A run's output directory and its provenance: ``--out`` handling, code version, input hashes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from jobs import data
from jobs.errors import UsageError


def prepare_out(out: Path, force: bool) -> None:
    """``--out`` must be new or empty unless ``--force`` (then it is cleared)."""
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a directory")
        if any(out.iterdir()):
            if not force:
                raise UsageError(f"--out {out} is not empty (use --force to overwrite)")
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def sha256_of(path: Path) -> str:
    return data.sha256_file(path)


def code_version() -> str:
    """The package version plus the git commit when run from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("streamquant")
    except PackageNotFoundError:
        v = "0+unknown"
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, check=False, cwd=Path(__file__).parent, timeout=5)
        if rev.returncode == 0 and rev.stdout.strip():
            v += "+g" + rev.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return v
