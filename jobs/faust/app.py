"""The streamquant graph as a faust-streaming app: ``build_app(config, pipeline)``.

Two agents and a timer over one :class:`jobs.faust.pipeline.FaustPipeline`:

- ``streamquant-graph`` reads every partition of ``md.ticks.raw`` and hosts the *whole* graph
  (normalize to account, whatever stages ``jobs.topology`` lists) in one keyed chain. One agent,
  not one per stage: the source's partitions must be merged back into the feed handler's
  sequence (``sq.seq``) before any operator sees a record, watermarks must be the minimum over
  every partition, and the chain re-keys (symbol -> account); per-stage agents would put six
  intermediate topics, their serialization and their cross-partition interleavings between
  the stages, and a consistent checkpoint across agents would need a distributed snapshot.
  In one agent the core's dispatch order holds, and the orders are the embedded run's.
- ``streamquant-control`` reads ``control``; commands are stamped with the watermark and
  journaled exactly as on the live path.
- a timer checkpoints while input is idle (the wall-clock trigger).

Delivery: the topics are declared without acks and the streams are ``noack``: Faust never
commits on its own. A checkpoint (under the
output lock) snapshots the pipeline, sends what it buffered, waits until the broker has
acknowledged every record produced so far, writes the snapshot atomically, and only then
commits the consumer offsets the snapshot resumes at. No idempotent producer and no
transactions (aiokafka cannot use them on tansu): at-least-once with deterministic ids
(``docs/faust.md``).

The web endpoint serves ``/streamquant/health/`` and ``/streamquant/status/`` (watermark, lag,
positions) beside Faust's own pages.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from jobs.faust.pipeline import FaustHostError, FaustPipeline
from jobs.live.host import FAULT_ENV, CheckpointPolicy
from topics import names as tn
from topics.catalog import CATALOG

BATCH = 2_000
BATCH_WAIT_S = 0.005
"""Records handed to the pipeline per agent step, and how long a partial batch waits."""

FAULTS = ("checkpoint-write", "after-checkpoint")
"""``STREAMQUANT_FAULT`` kinds the Faust worker honours (recovery tests): SIGKILL half-way
through writing the N-th checkpoint file, or after it and before its offsets are committed."""


@dataclass(frozen=True, slots=True)
class FaustConfig:
    """Where the worker runs and how; validated at construction."""

    bootstrap: str
    checkpoint_dir: Path
    topic_prefix: str = ""
    job_id: str = "streamquant"
    until_end: bool = False
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    fault: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        if not self.bootstrap or any(not h.rpartition(":")[2].isdigit()
                                     for h in self.bootstrap.split(",")):
            raise ValueError(f"bootstrap {self.bootstrap!r}: expected HOST:PORT[,HOST:PORT]")
        if not self.job_id or not all(c.isalnum() or c in "._-" for c in self.job_id):
            raise ValueError(f"job id {self.job_id!r}: use letters, digits, '.', '_', '-'")
        if not 0 < self.web_port < 65536:
            raise ValueError(f"web port {self.web_port} out of range")
        if self.fault is not None and self.fault[0] not in FAULTS:
            raise ValueError(f"{FAULT_ENV} kind {self.fault[0]!r}: one of {FAULTS}")

    @property
    def app_id(self) -> str:
        """Faust's app id, which is also the consumer group: job and topic prefix."""
        return f"{self.job_id}.faust.{self.topic_prefix or 'default'}".rstrip(".")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


def parse_fault(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    kind, _, n = spec.partition(":")
    if kind not in FAULTS or not n.isdigit():
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected checkpoint-write:N or "
                         "after-checkpoint:N")
    return kind, int(n)


Send = Callable[[str, bytes | None, bytes, Any], Awaitable[Any]]


class Driver:
    """The async half of the host: sends the pipeline's output and takes checkpoints."""

    def __init__(self, app: faust.App, pipeline: FaustPipeline, config: FaustConfig,
                 send: Send | None = None, stop: Callable[[], None] | None = None) -> None:
        self.app = app
        self._stop = stop or _terminate_self
        self.pipeline = pipeline
        self.config = config
        self._send = send
        self._lock = asyncio.Lock()
        self._futures: list[Any] = []
        self.finished = False

    async def _produce(self, topic: str, key: bytes | None, value: bytes, headers: Any) -> Any:
        if self._send is not None:
            return await self._send(topic, key, value, headers)
        return await self.app.producer.send(topic, key, value, None, None, headers)

    async def flush(self) -> None:
        """Send what the graph produced, in emission order (one sender at a time)."""
        async with self._lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        while self.pipeline.pending:
            for topic, value, key, headers in self.pipeline.drain():
                self._futures.append(await self._produce(topic, key, value, headers))

    async def checkpoint(self, *, best_effort_commit: bool = False) -> None:
        """Snapshot, send, await acks, write the snapshot, then commit its offsets."""
        async with self._lock:
            pipe = self.pipeline
            if pipe.error is not None:
                return  # outputs may be missing: the last good checkpoint stays the one
            data, offsets = pipe.snapshot()
            await self._flush_locked()
            futures, self._futures = self._futures, []
            results = await asyncio.gather(*(f for f in futures if isinstance(f, Awaitable)),
                                           return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                raise FaustHostError(f"{len(failed)} output records were not acknowledged "
                                     f"(first: {failed[0]!r}); restart to resume from the "
                                     "last checkpoint")
            n = pipe.stats.checkpoints + 1
            pipe.write(data, offsets[(tn.CONTROL, 0)],
                       fault_at_half=self.config.fault == ("checkpoint-write", n))
            if self.config.fault == ("after-checkpoint", n):
                os.kill(os.getpid(), signal.SIGKILL)
            if self._send is None:
                tps = {TP(self.config.topic(t), p): o for (t, p), o in offsets.items()}
                # Faust commits only acked offsets; ours are the checkpoint's (the streams are
                # noack), so the consumer's own commit step is called with them.
                consumer: Any = self.app.consumer
                try:
                    await consumer._commit_offsets(tps)
                except Exception as exc:  # shutting down: the checkpoint is what counts
                    if not best_effort_commit:
                        raise
                    pipe.log(f"offsets not committed at shutdown ({exc!r}); the restart "
                             "skips what the checkpoint covers")

    async def after_input(self) -> None:
        pipe = self.pipeline
        if pipe.pending:
            await self.flush()
        if pipe.checkpoint_due():
            await self.checkpoint()
        if self.config.until_end and pipe.ended and not self.finished:
            await self.checkpoint()
            self.finished = True
            pipe.log("source ended: checkpointed, stopping the worker")
            self._stop()

    async def fail(self, exc: BaseException) -> None:
        self.pipeline.error = self.pipeline.error or f"{type(exc).__name__}: {exc}"
        self.pipeline.log(f"streamquant: error: {self.pipeline.error}")
        self._stop()


def _terminate_self() -> None:
    """Stop the worker the way an operator does (SIGTERM: Faust's graceful shutdown)."""
    os.kill(os.getpid(), signal.SIGTERM)


def _unacked(stream: faust.StreamT[bytes]) -> Any:
    """The stream without Faust's acks: nothing is committed behind the checkpoints' back
    (``StreamT`` does not declare ``noack``/``take_events``; ``faust.Stream`` has both)."""
    concrete: Any = stream
    return concrete.noack()


def build_app(config: FaustConfig, pipeline: FaustPipeline, *, send: Send | None = None,
              stop: Callable[[], None] | None = None) -> tuple[faust.App, Driver]:
    """The Faust app hosting ``pipeline``; ``send`` replaces the producer and ``stop`` the
    worker's shutdown (unit tests under ``agent.test_context()``, where no worker runs)."""
    app = faust.App(
        config.app_id,
        broker=[f"kafka://{h}" for h in config.bootstrap.split(",")],
        broker_session_timeout=6,  # tansu holds JoinGroup for half of it
        broker_heartbeat_interval=1,
        consumer_auto_offset_reset="earliest",  # no group offsets yet: from the beginning
        topic_allow_declare=False,  # topics come from the catalog ('topics create')
        topic_disable_leader=True,
        stream_wait_empty=False,  # noack streams: nothing for Faust to wait for
        producer_acks=-1,
        producer_linger=0.005,
        key_serializer="raw",
        value_serializer="raw",
        web_host=config.web_host,
        web_bind=config.web_host,
        web_port=config.web_port,
        store="memory://",
        datadir=str(config.checkpoint_dir / "faust-data"),  # not the working directory
        autodiscover=False,
    )
    driver = Driver(app, pipeline, config, send, stop)
    # acks=False: Faust never records these topics' offsets as processed, so its commit
    # timer, rebalances and shutdown commit nothing (take_events acks every batch otherwise);
    # the only commits are the checkpoints' (Driver.checkpoint)
    source = app.topic(config.topic(pipeline.graph.source_topic), key_type=bytes,
                       value_type=bytes, acks=False,
                       partitions=CATALOG[pipeline.graph.source_topic].partitions)
    control = app.topic(config.topic(tn.CONTROL), key_type=bytes, value_type=bytes,
                        acks=False, partitions=CATALOG[tn.CONTROL].partitions)

    async def graph_agent(stream: faust.StreamT[bytes]) -> None:
        # batches: one await per batch instead of per record (Faust's per-event path is the
        # cost here); the batch closes after BATCH records or BATCH_WAIT_S without one
        async for events in _unacked(stream).take_events(BATCH, within=BATCH_WAIT_S):
            try:
                for event in events:
                    m = event.message
                    pipeline.on_source(m.partition, m.offset, m.value, m.headers)
                await driver.after_input()
            except Exception as exc:  # a failed send too: never checkpoint past it
                await driver.fail(exc)
                return

    async def control_agent(stream: faust.StreamT[bytes]) -> None:
        async for event in _unacked(stream).events():
            m = event.message
            try:
                pipeline.on_control(m.offset, m.value, m.headers)
                await driver.after_input()
            except Exception as exc:  # a failed send too: never checkpoint past it
                await driver.fail(exc)
                return

    app.agent(source, name="streamquant-graph", concurrency=1)(graph_agent)
    app.agent(control, name="streamquant-control", concurrency=1)(control_agent)

    async def idle_checkpoint() -> None:
        if pipeline.error is None and not driver.finished and pipeline.checkpoint_due():
            try:
                await driver.checkpoint()
            except Exception as exc:
                await driver.fail(exc)

    app.timer(interval=max(0.05, config.policy.every_wall_s / 2))(idle_checkpoint)

    async def drain_on_shutdown(sender: Any, **kwargs: Any) -> None:
        """SIGTERM / Ctrl-C: the consumer has stopped fetching; checkpoint what was done."""
        if pipeline.error is None and not driver.finished and pipeline.stats.consumed:
            await driver.checkpoint(best_effort_commit=True)
            pipeline.log("stopped: checkpointed")

    handler: Any = drain_on_shutdown  # mode's stubs take no coroutine functions
    app.on_before_shutdown.connect(handler)

    @app.page("/streamquant/health/")
    async def health(web: Any, request: Any) -> Any:
        st = pipeline.status()
        return web.json({"status": st["status"], "error": st["error"]},
                        status=500 if pipeline.error else 200)

    @app.page("/streamquant/status/")
    async def status(web: Any, request: Any) -> Any:
        return web.json(pipeline.status())

    return app, driver
