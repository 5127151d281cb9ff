"""Writing a model bundle whole: into a temporary sibling directory, then renamed into place.

``train --out DIR`` never merges into what ``DIR`` held: a merged registry would let a later
``run --models DIR`` serve models of another training window than the one ``strategy.json``
announces (silent lookahead). The new bundle is complete on disk before it replaces the old
one, and an interrupted or failed training leaves the old bundle (or nothing) in place.
Only a model bundle is replaced: a non-empty directory that is not one, or one that holds an
input of the training, is refused.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from jobs.errors import UsageError

T = TypeVar("T")
BUNDLE_FILES = ("strategy.json", "registry.json")


def is_bundle(directory: Path) -> bool:
    return any((directory / name).is_file() for name in BUNDLE_FILES)


def write_bundle_dir(out_dir: Path, build: Callable[[Path], T],
                     inputs: Iterable[Path] = ()) -> T:
    """``build(tmp)`` writes a whole bundle into a fresh directory; it then replaces
    ``out_dir``. Returns what ``build`` returned."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise UsageError(f"--out {out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not is_bundle(out_dir):
            raise UsageError(f"--out {out_dir} is not empty and is not a model bundle (no "
                             f"{' or '.join(BUNDLE_FILES)}); choose a new or empty directory")
        root = Path(os.path.realpath(out_dir))
        for p in inputs:
            rp = Path(os.path.realpath(p))
            if rp == root or root in rp.parents:
                raise UsageError(f"{p} is inside --out {out_dir}, which training replaces; "
                                 "move it or choose another --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.new-"))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # a bundle directory like any other, not mkdtemp's 0700
    try:
        result = build(tmp)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
            os.replace(out_dir, old / "bundle")
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(old / "bundle", out_dir)  # put the old bundle back
                old.rmdir()
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
        raise
    return result
