"""State codecs for what a ``msgspec.Struct`` cannot hold: an online model (a River estimator).

:class:`PickleCodec` stores such state as pickle inside a versioned frame. Its ``name`` —
state type, frame version and the versions of the libraries whose classes the pickle holds —
goes into the operator envelope, so a checkpoint written under another state type, codec
version or library release is refused before a byte of it is unpickled (a River model pickled
by one release is not guaranteed to load, or to behave, under another). Decoding then checks
the frame and the type once more.

A checkpoint is trusted input, but pickle executes what it names, so decoding resolves only
classes from the state's own package, the named libraries, numpy, the standard containers,
``random.Random`` (a seeded generator's state is plain integers) and ``functools.partial``.

Pickle's memo makes its bytes depend on object identity — whether two equal strings (a dict
key in the scaler and the same key in the weights) are one object — and a restored state's
strings are fresh objects (so are its numpy dtypes). The codec's pickler writes strings and
dtypes by value (it never memoizes them; containers and objects keep their sharing), so
equal states encode to equal bytes whatever their history: a restored state, and one that
learned on after a restore, encode exactly as the uninterrupted run's. It is the pure-Python
pickler, about 10x slower than C pickle (~0.4 ms for a 13-feature River pipeline): a cost
paid per key at a checkpoint, never per event.
"""

from __future__ import annotations

import importlib.util
import io
import pickle
import struct
from collections.abc import Sequence
from importlib import metadata
from typing import Any, Generic, TypeVar

import numpy as np

S = TypeVar("S")

MAGIC = b"SQPK"
PROTOCOL = 5  # fixed: HIGHEST_PROTOCOL changes with the Python version, and with it the bytes
_HEADER = struct.Struct(">4sHH")  # magic, frame version, length of the codec name
_SAFE_BUILTINS = frozenset({
    "bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list",
    "object", "range", "set", "slice", "str", "tuple",
})
_SAFE_MODULES = ("collections", "copyreg", "numpy")
_SAFE_CLASSES = frozenset({("random", "Random"), ("functools", "partial")})
"""Single classes outside those modules: a seeded generator (River's adaptive tree holds one)
and ``partial`` (River's histogram splitters build their bins through one; the function it
wraps is resolved by the same rules)."""


class OpaqueStateError(ValueError):
    """Bytes that are not this codec's frame, or hold another type or a forbidden class."""


def _private_pickle() -> Any:
    """A private copy of the stdlib ``pickle`` module: libraries patch the shared pure-Python
    pickler's dispatch table when imported (dill, under apache-beam and PyFlink, makes types
    pickle as ``dill._dill._load_type``), which would change our bytes and refuse our loads
    depending on what else the process imported."""
    spec = importlib.util.find_spec("pickle")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_pickle = _private_pickle()


class _ValuePickler(_pickle._Pickler):  # type: ignore[misc,name-defined]
    """Pickles strings and numpy dtypes by value: no memo entry, so their identity never
    shows in the bytes (arrays made before a restore hold an unpickled dtype object, arrays
    made after it numpy's own: memoized, the two would pickle differently)."""

    def memoize(self, obj: Any) -> None:
        if type(obj) is not str and not isinstance(obj, np.dtype):
            super().memoize(obj)  # type: ignore[misc]  # pure-Python pickler internals


def _dumps(state: Any) -> bytes:
    buf = io.BytesIO()
    _ValuePickler(buf, protocol=PROTOCOL).dump(state)
    return buf.getvalue()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, modules: tuple[str, ...]) -> None:
        super().__init__(io.BytesIO(data))
        self._modules = modules

    def find_class(self, module: str, name: str) -> Any:
        allowed = (name in _SAFE_BUILTINS if module == "builtins" else
                   (module, name) in _SAFE_CLASSES or
                   any(module == m or module.startswith(m + ".") for m in self._modules))
        if not allowed:
            raise OpaqueStateError(f"state names {module}.{name}, which the codec does not load")
        return super().find_class(module, name)


class PickleCodec(Generic[S]):
    """Pickle of one key's opaque state in a frame: ``SQPK``, frame version, codec name.

    ``state_type`` is what every decoded state must be; ``version`` is the operator's
    format version of that state (bump it when the state's layout changes); ``libraries``
    names the distributions whose objects the state holds (``("river",)``): their installed
    versions are part of the codec name.
    """

    __slots__ = ("_header", "_modules", "_state_type", "_version", "name")

    def __init__(self, state_type: type[S], *, version: int = 1,
                 libraries: Sequence[str] = ()) -> None:
        if not 0 < version < 2**16:
            raise ValueError(f"codec version must be in [1, 65535], got {version}")
        self._state_type = state_type
        self._version = version
        pins = "".join(f";{lib}=={metadata.version(lib)}" for lib in libraries)
        self.name = f"pickle:{state_type.__module__}.{state_type.__qualname__}:v{version}{pins}"
        encoded = self.name.encode()
        self._header = _HEADER.pack(MAGIC, version, len(encoded)) + encoded
        own = state_type.__module__.split(".")[0]
        self._modules = (own, *(lib.replace("-", "_") for lib in libraries), *_SAFE_MODULES)

    def encode(self, state: S) -> bytes:
        if not isinstance(state, self._state_type):
            raise OpaqueStateError(
                f"{self.name}: cannot encode a {type(state).__qualname__}")
        return self._header + _dumps(state)

    def decode(self, data: bytes) -> S:
        if len(data) < _HEADER.size or data[:4] != MAGIC:
            raise OpaqueStateError(f"{self.name}: not a pickled-state frame")
        _, version, n = _HEADER.unpack_from(data)
        name = data[_HEADER.size:_HEADER.size + n].decode(errors="replace")
        if version != self._version or name != self.name:
            raise OpaqueStateError(f"state written by codec {name!r}, this codec is {self.name!r}")
        return self._load(data[_HEADER.size + n:])

    def _load(self, payload: bytes) -> S:
        state = _RestrictedUnpickler(payload, self._modules).load()
        if not isinstance(state, self._state_type):
            raise OpaqueStateError(
                f"{self.name}: decoded a {type(state).__qualname__}, "
                f"expected {self._state_type.__qualname__}")
        return state
