"""A throw-away ``redis-server`` on 127.0.0.1 for tests and benchmarks.

No persistence (``--save '' --appendonly no``): a restart forgets every key, which is exactly
the outage the Redis tap must survive (it rewrites the latest state when the server is back).
The server gets SIGTERM when the process that started it dies (Linux), so a killed test run
leaves no orphan holding its port.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _ping(port: int, timeout_s: float) -> bool:
    """A raw ``PING`` (no client library): True on ``+PONG``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server`` on 127.0.0.1 (``port=0``: a free one); a context manager.

    :meth:`kill` (SIGKILL) and :meth:`start` again on the same port simulate a crash and a
    restart with an empty dataset.
    """

    def __init__(self, port: int = 0, *, binary: str = "redis-server",
                 log_path: Path | None = None) -> None:
        path = shutil.which(binary)
        if path is None:
            raise FileNotFoundError(f"{binary} not found (apt-get install redis-server)")
        self.binary = path
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        if self.log_path is not None and self._log is None:
            self._log = self.log_path.open("ab")
        sink: IO[bytes] | int = self._log if self._log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"],
            stdout=sink, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None)  # noqa: PLW1509
        deadline = time.monotonic() + timeout_s
        while not _ping(self.port, 0.5):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} on port "
                                   f"{self.port}" + (f"; see {self.log_path}"
                                                     if self.log_path else ""))
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis-server on port {self.port} did not answer PING")
            time.sleep(0.01)
        return self

    def kill(self) -> None:
        """SIGKILL: a crash (the dataset is gone; nothing was persisted)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 10 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
