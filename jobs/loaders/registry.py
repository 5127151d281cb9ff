"""A versioned registry of ONNX models: one ``registry.json`` beside the model files.

The registry is the only thing that connects training to inference: the trainer writes model
files first and the registry file last (atomically), so a reader never sees an entry whose
file is not there yet. Every entry carries the sha256 of its file, checked on load and again
on the exact bytes handed to onnxruntime, so a tampered, truncated or swapped file fails
loudly instead of serving silently wrong predictions.

Which entry is "latest" is decided from content only (newest training window end, then
start, then version string), never from file times or insertion order, so every process that
reads the same file picks the same models.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import ClassVar

import msgspec

from operators.model_provider import (
    CREATED_BY,
    Kind,
    LinearCoefficients,
    ModelEntry,
    ModelIntegrityError,
    ParamValue,
    RegimeName,
    sha256_bytes,
    verified,
)

__all__ = [
    "CREATED_BY",
    "REGISTRY_FORMAT",
    "FileModelProvider",
    "Kind",
    "LinearCoefficients",
    "ModelEntry",
    "ModelIntegrityError",
    "ParamValue",
    "RegimeName",
    "Registry",
    "RegistryError",
    "sha256_bytes",
    "write_atomic",
]

REGISTRY_FORMAT = 1


class RegistryError(RuntimeError):
    """The registry file is missing, malformed or inconsistent."""


class _RegistryFile(msgspec.Struct, frozen=True, kw_only=True):
    format_version: int
    entries: tuple[ModelEntry, ...]


_encoder = msgspec.json.Encoder(order="deterministic")
_decoder = msgspec.json.Decoder(_RegistryFile)


def _order_key(e: ModelEntry) -> tuple[str, int, int, str]:
    return (e.name, e.train_end, e.train_start, e.version)


def _check_entry(e: ModelEntry) -> None:
    p = PurePosixPath(e.path)
    if p.is_absolute() or ".." in p.parts or not e.path:
        raise RegistryError(f"{e.ref}: path {e.path!r} must be relative to the registry dir")
    if len(e.sha256) != 64:
        raise RegistryError(f"{e.ref}: sha256 {e.sha256!r} is not a hex sha256 digest")
    if e.linear is not None:
        n = len(e.feature_names)
        lin = e.linear
        if not (len(lin.mean) == len(lin.scale) == len(lin.coef) == n):
            raise RegistryError(f"{e.ref}: linear coefficients do not match {n} features")


class Registry:
    """Entries of one registry directory, with integrity checks, selection and hot reload.

    Not an operator: it does file I/O. Operators receive the sessions it verified.
    """

    FILE_NAME: ClassVar[str] = "registry.json"

    def __init__(self, root: str | Path, entries: Iterable[ModelEntry] = ()) -> None:
        self._root = Path(root)
        self._entries: tuple[ModelEntry, ...] = ()
        self._content_hash: str | None = None
        self._set_entries(entries)

    # -- loading and saving ----------------------------------------------------------
    @classmethod
    def load(cls, root: str | Path, *, verify: bool = True) -> Registry:
        """Read ``root/registry.json``; with ``verify`` check every model file's sha256."""
        reg = cls(root)
        data = reg._read_file()
        reg._set_entries(reg._decode(data))
        if verify:
            reg.verify_all()
        reg._content_hash = sha256_bytes(data)
        return reg

    @classmethod
    def open(cls, root: str | Path) -> Registry:
        """Load the registry if its file exists, else start an empty one (for the trainer)."""
        if (Path(root) / cls.FILE_NAME).exists():
            return cls.load(root)
        return cls(root)

    def encode(self) -> bytes:
        """The registry file's bytes: entries in content order, dict keys sorted, indented
        (a registry is read and diffed by people too)."""
        doc = _RegistryFile(format_version=REGISTRY_FORMAT, entries=self._entries)
        return msgspec.json.format(_encoder.encode(doc), indent=2) + b"\n"

    def save(self) -> None:
        """Write ``registry.json`` atomically (temp file + rename in the same directory)."""
        self._root.mkdir(parents=True, exist_ok=True)
        data = self.encode()
        write_atomic(self.file, data)
        self._content_hash = sha256_bytes(data)

    def reload_if_changed(self) -> bool:
        """Re-read the file if its content hash changed; verify it; report whether it did.

        On any error the current entries are kept and the error is raised, so a bad deploy
        never half-replaces a working registry.
        """
        data = self._read_file()
        digest = sha256_bytes(data)
        if digest == self._content_hash:
            return False
        fresh = Registry(self._root, self._decode(data))
        fresh.verify_all()
        self._entries = fresh._entries
        self._content_hash = digest
        return True

    # -- queries ---------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self._root

    @property
    def file(self) -> Path:
        return self._root / self.FILE_NAME

    @property
    def entries(self) -> tuple[ModelEntry, ...]:
        return self._entries

    @property
    def content_hash(self) -> str | None:
        """sha256 of the registry file as last loaded or saved (None if never)."""
        return self._content_hash

    def names(self) -> tuple[str, ...]:
        return tuple(sorted({e.name for e in self._entries}))

    def versions(self, name: str) -> tuple[ModelEntry, ...]:
        """Entries of one model name, oldest first."""
        return tuple(e for e in self._entries if e.name == name)

    def get(self, name: str, version: str | None = None) -> ModelEntry:
        """A pinned version, or the latest (newest training window) when ``version`` is None."""
        found = self.versions(name)
        if not found:
            raise RegistryError(
                f"no model named {name!r} in {self.file}; known: {', '.join(self.names())}"
            )
        if version is None:
            return found[-1]
        for e in found:
            if e.version == version:
                return e
        known = ", ".join(e.version for e in found)
        raise RegistryError(f"model {name!r} has no version {version!r}; known: {known}")

    def select(
        self, names: Sequence[str], pins: Mapping[str, str] | None = None
    ) -> tuple[ModelEntry, ...]:
        """The entries to serve, in the order of ``names``: pinned version, else latest."""
        pins = pins or {}
        unknown = set(pins) - set(names)
        if unknown:
            raise RegistryError(f"pins for models not selected: {sorted(unknown)}")
        return tuple(self.get(n, pins.get(n)) for n in names)

    # -- model files -----------------------------------------------------------------
    def path_of(self, entry: ModelEntry) -> Path:
        return self._root / entry.path

    def read_model(self, entry: ModelEntry) -> bytes:
        """The model file's bytes, verified against the entry's sha256."""
        path = self.path_of(entry)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelIntegrityError(f"model file of {entry.ref} is missing: {path}") from None
        return verified(entry, data, str(path))

    def verify(self, entry: ModelEntry) -> None:
        self.read_model(entry)

    def verify_all(self) -> None:
        for e in self._entries:
            self.verify(e)

    # -- mutation (trainer side) -------------------------------------------------------
    def add(self, entry: ModelEntry) -> None:
        """Add an entry; re-adding an identical one is a no-op, a conflicting one an error.

        A version names one exact artifact: overwriting it in place under running readers
        would change what a pinned version means.
        """
        _check_entry(entry)
        for e in self._entries:
            if e.name == entry.name and e.version == entry.version:
                if e == entry:
                    return
                raise RegistryError(
                    f"{entry.ref} is already registered with different content "
                    f"(sha256 {e.sha256} vs {entry.sha256}); versions are immutable"
                )
        self._set_entries((*self._entries, entry))

    # -- internals -------------------------------------------------------------------
    def _set_entries(self, entries: Iterable[ModelEntry]) -> None:
        items = tuple(entries)
        seen: set[tuple[str, str]] = set()
        for e in items:
            _check_entry(e)
            if (e.name, e.version) in seen:
                raise RegistryError(f"{e.ref} appears twice in {self.file}")
            seen.add((e.name, e.version))
        self._entries = tuple(sorted(items, key=_order_key))

    def _read_file(self) -> bytes:
        try:
            return self.file.read_bytes()
        except FileNotFoundError:
            raise RegistryError(f"no model registry at {self.file}") from None

    def _decode(self, data: bytes) -> tuple[ModelEntry, ...]:
        try:
            doc = _decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise RegistryError(f"malformed registry {self.file}: {exc}") from None
        if doc.format_version != REGISTRY_FORMAT:
            raise RegistryError(
                f"{self.file}: registry format {doc.format_version}, expected {REGISTRY_FORMAT}"
            )
        return doc.entries


class FileModelProvider:
    """The registry directory as a :class:`~operators.model_provider.ModelProvider`.

    The served set is selected once, when the host builds the graph (latest or pinned per
    name); ``load`` reads a model file and checks its sha256, so the bytes onnxruntime gets are
    the bytes the entry names. A retrained registry is served by selecting again and building
    a new ``infer`` config and operator: this object never changes what it serves.
    """

    __slots__ = ("_registry", "_served")

    def __init__(self, registry: Registry, served: Sequence[ModelEntry]) -> None:
        self._registry = registry
        self._served = tuple(served)

    @classmethod
    def select(
        cls, root: str | Path, names: Sequence[str], pins: Mapping[str, str] | None = None
    ) -> FileModelProvider:
        """Read and verify ``root/registry.json``; serve ``names`` (pinned, else latest)."""
        reg = Registry.load(root)
        return cls(reg, reg.select(names, pins))

    @property
    def registry(self) -> Registry:
        return self._registry

    def entries(self) -> tuple[ModelEntry, ...]:
        return self._served

    def load(self, entry: ModelEntry) -> bytes:
        return self._registry.read_model(entry)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so readers see the old or the new content, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # the mode of any new file, not mkstemp's 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
