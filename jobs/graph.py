"""The dataflow graph: which operator consumes which topics and produces which.

A graph is data, not code: every runtime (the local runner, PyFlink) walks the same stages in
the same topological order, so "what runs" is defined once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from operators.contract import Operator
from topics import names as tn
from topics.catalog import CATALOG


@dataclass(frozen=True, slots=True)
class Stage:
    """One operator instance with its input and output topics."""

    operator: Operator[Any, Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    merge_inputs: bool = False
    """Deliver the inputs in event-time order (``jobs.core.merge``): rank = position in
    ``inputs``."""

    @property
    def uid(self) -> str:
        return self.operator.UID


@dataclass(frozen=True, slots=True)
class Graph:
    """Stages in topological order (each stage's inputs come from the source or earlier)."""

    source_topic: str
    stages: tuple[Stage, ...]
    external: tuple[str, ...] = ()
    """Further topics fed from outside the graph (control, or a batched front end's output)."""

    def __post_init__(self) -> None:
        seen_uids: set[str] = set()
        produced = {self.source_topic, *self.external}
        for st in self.stages:
            if st.uid in seen_uids:
                raise ValueError(f"duplicate operator uid {st.uid!r}")
            seen_uids.add(st.uid)
            for t in (*st.inputs, *st.outputs):
                if t not in CATALOG:
                    raise ValueError(f"stage {st.uid}: topic {t!r} is not in the catalog")
            missing = [t for t in st.inputs if t not in produced]
            if missing:
                raise ValueError(f"stage {st.uid} consumes {missing} before anything produces them")
            produced.update(st.outputs)

    @property
    def output_topics(self) -> tuple[str, ...]:
        out: list[str] = [t for t in self.external if t != tn.CONTROL]
        for st in self.stages:
            out.extend(t for t in st.outputs if t not in out)
        return tuple(out)

    def consumers(self, topic_name: str) -> tuple[Stage, ...]:
        return tuple(st for st in self.stages if topic_name in st.inputs)
