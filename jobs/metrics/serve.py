"""The run's metrics endpoint: a per-run registry on 127.0.0.1, and its linger.

One ``CollectorRegistry`` per run (never the process-global one), so two runs in a process -
tests, benchmarks - never mix or collide. The endpoint binds to loopback only: exposing it is
a deployment decision (a sidecar or a port-forward), not a default.

A replay ends in seconds, between two scrapes. ``linger_s`` keeps the endpoint up after the
run until one scrape has fetched the final values (``streamquant_run_finished`` 1), at most
``linger_s`` seconds, so Prometheus records how a batch job ended. "Fetched" means the
response was written: the server calls the body's ``close()`` after sending it, and that is
what ends the linger.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from jobs.errors import UsageError
from jobs.metrics.collector import RunCollector
from jobs.metrics.tap import MetricsTap, note

HOST = "127.0.0.1"


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a hung scraper never keeps the process alive


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr (the run's own output is there)."""


class _Body:
    """A response body whose ``close()`` (called once it was sent) runs ``done``."""

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self._body = body
        self._done = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
        self._done()


@dataclass(slots=True)
class MetricsEndpoint:
    """A running endpoint; ``stop`` (or the tap's close, with the linger) ends it."""

    tap: MetricsTap
    registry: CollectorRegistry
    port: int
    linger_s: float
    _server: _Server
    _thread: threading.Thread
    final_served: threading.Event = field(default_factory=threading.Event)

    def linger_then_stop(self) -> None:
        """Wait for a scrape of the final values (at most ``linger_s``), then stop."""
        if self.linger_s > 0 and not self.final_served.is_set():
            note(f"run ended; serving the final values on {self.url} until scraped "
                 f"(at most {self.linger_s:g} s)")
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends the linger only
                self.final_served.wait(self.linger_s)
        self.stop()

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if not self._thread.is_alive():
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2.0)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/metrics"


def serve(port: int, *, linger_s: float = 0.0, siblings: Any = (),
          tap: MetricsTap | None = None) -> MetricsEndpoint:
    """A metrics tap with its endpoint on ``127.0.0.1:port`` (0: a free port); the URL is
    printed on stderr. Closing the tap lingers (see module doc) and stops the endpoint."""
    if linger_s < 0:
        raise UsageError(f"--metrics-linger must be >= 0, got {linger_s}")
    tap = tap or MetricsTap(siblings=siblings)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(tap))
    app = make_wsgi_app(registry)
    served = threading.Event()

    def endpoint(environ: dict[str, Any], start_response: Any) -> Any:
        final = tap.finished  # values read after this are final
        body = app(environ, start_response)
        return _Body(body, served.set) if final else body

    try:
        server = make_server(HOST, port, endpoint, _Server, handler_class=_QuietHandler)
    except OSError as exc:
        raise UsageError(f"--metrics-port {port}: cannot listen on {HOST}:{port} ({exc})"
                         ) from None
    thread = threading.Thread(target=server.serve_forever, name="metrics-endpoint",
                              daemon=True)
    thread.start()
    ep = MetricsEndpoint(tap, registry, server.server_port, linger_s, server, thread, served)
    tap.on_close(ep.linger_then_stop)
    note(f"serving {ep.url}")
    return ep
