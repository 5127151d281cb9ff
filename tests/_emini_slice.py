"""A slice of the real E-mini sample as a user's own tick file, and a bundle trained on it.

The CLI tests of output safety, run status and bundles need a real tick file they can copy,
move into ``--out`` and point ``--ticks`` at, plus a ``--models`` bundle: the first
``SLICE_TICKS`` trades of the bundled sample, written with canonical column names
(``ts,symbol,price,size``; naive CME local time, so runs pass ``--tz America/Chicago``), and
one ``streamquant train --ticks`` of it per test session.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobs.cli import main

SLICE_TICKS = 120_000
"""Sunday 17:00 CT to Tuesday 06:31 CT across the Labor Day halt: 1,824 one-minute bars."""
TZ_ARGS = ("--tz", "America/Chicago")


def write_slice(src: Path, dest: Path, n: int = SLICE_TICKS) -> Path:
    """The first ``n`` trades of the E-mini file under canonical column names."""
    out = ["ts,symbol,price,size"]
    with src.open(encoding="utf-8") as f:
        next(f)  # DateTime,Price,Volume
        for _, line in zip(range(n), f, strict=False):
            ts, price, size = line.rstrip("\n").split(",")
            out.append(f"{ts},ES,{price},{size}")
    dest.write_text("\n".join(out) + "\n")
    return dest


def slice_fixtures() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Session fixtures ``emini_slice`` (the tick file) and ``slice_models`` (its bundle)."""

    @pytest.fixture(scope="session")
    def emini_slice(tmp_path_factory: pytest.TempPathFactory, emini_ticks_path: Path) -> Path:
        return write_slice(emini_ticks_path, tmp_path_factory.mktemp("slice") / "es.csv")

    @pytest.fixture(scope="session")
    def slice_models(tmp_path_factory: pytest.TempPathFactory, emini_slice: Path) -> Path:
        models = tmp_path_factory.mktemp("slice_models") / "bundle"
        assert main(["train", "--ticks", str(emini_slice), *TZ_ARGS, "--out", str(models),
                     "--quiet"]) == 0
        return models

    return emini_slice, slice_models
