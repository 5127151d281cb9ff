"""The Flink job: a source of item blocks, one keyed Flink operator per stage, in graph order.

``build_pipeline`` adds the graph to a ``StreamExecutionEnvironment``; the stream it returns
carries, per element, the ``OUT`` items of a block in the embedded runner's emission order
(``jobs.core.linear``). Every stage is its own operator (``uid`` = the operator's UID, so
savepoints map state to stages by name), keyed by the chain's one partition key: the stream
order *is* the dispatch order, so the whole stream of a stage goes through one key group and
the operator keys live inside it as ``MapState`` entries (docs/flink.md, "Keys").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pyflink.common import WatermarkStrategy
from pyflink.common.typeinfo import Types
from pyflink.datastream import (
    DataStream,
    FlatMapFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.connectors.number_seq import NumberSequenceSource

from jobs.core.linear import DELIVER, END, OUT, SOURCE, Item
from jobs.flink.settings import FlinkSettings
from jobs.flink.stage_fn import SIDE_TOPICS, StageFunction, side_tag
from jobs.flink.wire import pack
from jobs.graph import Graph

PARTITION_KEY = "p0"
"""The chain's one key: a stage's items stay in stream order (docs/flink.md, "Keys")."""


def environment(settings: FlinkSettings) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment.get_execution_environment(settings.configuration())
    env.set_parallelism(1)
    return env


class BlockSource(FlatMapFunction):  # type: ignore[misc]
    """Block ``i`` of the source: ``SOURCE`` items of its records (the injected messages
    first, ``END`` after the last). Records are loaded in the task, so the job graph stays
    small and a restart re-reads the same blocks by number."""

    def __init__(self, load: Callable[[], Sequence[Any]], injected: Sequence[tuple[str, Any]],
                 block: int, blocks: int) -> None:
        self.load = load
        self.injected = tuple(injected)
        self.block = block
        self.blocks = blocks

    def open(self, runtime_context: RuntimeContext) -> None:
        self.records = self.load()

    def flat_map(self, value: int) -> Iterator[bytes]:
        i = int(value)
        items: list[Item] = []
        if i == 0:
            for topic, msg in self.injected:
                items += [(OUT, topic, msg), (DELIVER, topic, msg)]
        items += [(SOURCE, r) for r in self.records[i * self.block:(i + 1) * self.block]]
        if i == self.blocks - 1:
            items.append((END,))
        yield pack(items)


def build_pipeline(env: StreamExecutionEnvironment, make_graph: Callable[[], Graph], *,
                   n_records: int,
                   load: Callable[[], Sequence[Any]], injected: Sequence[tuple[str, Any]] = (),
                   lateness_ns: int, watermark_topic: str, block: int
                   ) -> tuple[DataStream, dict[str, DataStream]]:
    """The graph as Flink operators: the output items and the side-output streams by topic."""
    blocks = max(1, -(-n_records // block))
    ds = env.from_source(NumberSequenceSource(0, blocks - 1),
                         WatermarkStrategy.no_watermarks(), "blocks").uid("source-blocks")
    ds = ds.flat_map(BlockSource(load, injected, block, blocks),
                     output_type=Types.PICKLED_BYTE_ARRAY()).uid("source-items").name("items")
    side: dict[str, DataStream] = {}
    graph = make_graph()  # the stages' uids and topics; every task builds its own
    for i, st in enumerate(graph.stages):
        sides = [t for t in st.outputs if t in SIDE_TOPICS]
        ds = (ds.key_by(_partition_key, key_type=Types.STRING())
              .process(StageFunction(make_graph, i, sides, lateness_ns=lateness_ns,
                                     watermark_topic=watermark_topic),
                       output_type=Types.PICKLED_BYTE_ARRAY())
              .uid(st.uid).name(st.uid))
        for t in sides:
            side[t] = ds.get_side_output(side_tag(t))
    return ds, side


def _partition_key(_: Any) -> str:
    return PARTITION_KEY
