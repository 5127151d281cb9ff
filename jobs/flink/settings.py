"""How the local MiniCluster runs the job: a frozen, validated settings object.

Kept apart from the job so the CLI can build it without importing pyflink.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class FlinkSettings:
    """How the local MiniCluster runs the job (validated here, once)."""

    mode: str = "thread"
    checkpoint_interval_ms: int = 2_000
    state_backend: str = "hashmap"
    checkpoint_dir: Path | None = None
    restart_attempts: int = 2
    block: int = 512
    log_dir: Path | None = None
    jars: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.mode not in ("thread", "process"):
            raise ValueError(f"flink mode must be thread or process, not {self.mode!r}")
        if self.state_backend not in ("hashmap", "rocksdb"):
            raise ValueError(f"state backend must be hashmap or rocksdb, not "
                             f"{self.state_backend!r}")
        if self.checkpoint_interval_ms < 0 or self.restart_attempts < 0 or self.block < 1:
            raise ValueError("checkpoint interval, restart attempts >= 0; block >= 1")

    def configuration(self) -> Any:
        """The Flink ``Configuration`` (pyflink is imported only here)."""
        from pyflink.common import Configuration

        c = Configuration()
        c.set_string("python.execution-mode", self.mode)
        c.set_string("python.executable", sys.executable)
        c.set_string("python.client.executable", sys.executable)
        c.set_string("parallelism.default", "1")
        c.set_string("restart-strategy.type", "fixed-delay")
        c.set_string("restart-strategy.fixed-delay.attempts", str(self.restart_attempts))
        c.set_string("restart-strategy.fixed-delay.delay", "500 ms")
        c.set_string("state.backend.type", self.state_backend)
        if self.checkpoint_interval_ms:
            c.set_string("execution.checkpointing.interval", f"{self.checkpoint_interval_ms} ms")
        if self.checkpoint_dir is not None:
            c.set_string("execution.checkpointing.dir", self.checkpoint_dir.resolve().as_uri())
        if self.jars:
            c.set_string("pipeline.jars", ";".join(self.jars))
        return c
