"""The batched replay: normalize and window features on the columnar accelerator, in chunks.

The accelerator (``jobs.accel``) works across keys at once, which no keyed runtime can host;
this driver feeds it a tick file and hands its outputs to the bar-rate stages, which run on
the same local runner as the per-event path, fed in the per-event order. The topic files are
byte-identical to the per-event path's (tested).

The file streams through chunk by chunk (``jobs.tick_files.iter_tick_columns``): each chunk
is validated, turned into ticks, folded into bars and handed on before the next one is read,
so memory does not grow with the file. What spans chunks is carried explicitly, exactly as the
per-event path carries it: normalize's dedupe states and newest valid time (the watermark its
forward-jump check uses), the features' open bars and the watermark. Chunk boundaries do not
change a byte of output (tested with chunks of a few rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from jobs.accel.features_columns import BatchResult, FeaturesColumns
from jobs.accel.normalize_columns import NormalizeColumns, RawTickColumns
from jobs.accel.tick_columns import TickColumns, bounded_watermarks
from jobs.graph import Graph, Stage
from jobs.local_runner import LocalRunner
from jobs.progress import Progress
from jobs.sources import TickInput
from jobs.text_files import BLOCK_BYTES
from jobs.tick_files import iter_tick_columns
from jobs.topic_sink import TopicSink
from operators.contract import END_OF_STREAM, Emit
from operators.domain.dedupe import DedupeState
from operators.features import WindowFeatures
from operators.normalize import Normalize
from topics import names as tn
from topics.messages import Control, LateTick, Tick

CHUNK = 65_536


def run_batch_ticks(src: TickInput, norm: Normalize, feats: WindowFeatures,
                    chain: tuple[Stage, ...], sink: TopicSink, lateness_ns: int,
                    controls: list[Control], progress: Progress, *,
                    block_bytes: int | None = BLOCK_BYTES, max_lines: int | None = None) -> int:
    """Normalize + features over columns, the decision chain behind them per event.

    Writes the same topic files as ``run_event_ticks``: each tick reaches the chain, then the
    bars its watermark closes, then the watermark itself, exactly as the event path orders
    them. The file is read in chunks of about ``block_bytes`` (at most ``max_lines`` lines);
    returns the number of records read.
    """
    ncols = NormalizeColumns(norm)
    fcols = FeaturesColumns(feats)
    need_ticks = bool(chain) or sink.needs_messages(tn.MD_TICKS) or \
        sink.needs_messages(tn.MD_TICKS_LATE)
    runner: LocalRunner | None = None
    if chain:
        graph = Graph(tn.MD_TICKS, chain, external=(tn.FEATURES, tn.CONTROL))
        runner = LocalRunner(graph, sink, lateness_ns=lateness_ns)
        for c in controls:
            runner.inject(tn.CONTROL, c)
    dedupe: dict[str, DedupeState] = {}  # normalize's state per symbol, across chunks
    newest: int | None = None  # normalize's newest valid event time (its watermark's basis)
    states: dict[str, Any] = {}  # the features' state per symbol
    max_seen: int | None = None  # the features' watermark basis
    n = 0
    for cols in iter_tick_columns(src.path, src.column_map, src.tz, src.default_symbol,
                                  src.default_venue, delimiter=src.delimiter, label=src.label,
                                  block_bytes=block_bytes, max_lines=max_lines):
        n += len(cols)
        result = ncols.validate(cols, dedupe, lateness_ns=lateness_ns, max_seen=newest)
        newest = result.max_seen
        for dl in result.dead_letters:
            sink.emit(tn.MD_TICKS_DLQ, dl)
        valid = cols.select(result.valid)
        ticks = ncols.ticks(valid, np.ones(len(valid), dtype=bool)) if need_ticks else None
        bt = _tick_columns(valid, src, ticks)
        if runner is None:
            if ticks is not None:
                for t in ticks:
                    sink.emit(tn.MD_TICKS, t)
            else:
                sink.counts[tn.MD_TICKS] += len(valid)
        for start in range(0, len(bt), CHUNK):
            chunk = bt.slice(start, start + CHUNK)
            before, after, max_seen = bounded_watermarks(chunk.ts, lateness_ns, max_seen)
            res = fcols.process(states, chunk, before, after)
            if runner is None:
                _emit_all(sink, res.emits(chunk))
            else:
                _drive_chain(runner, sink, res, chunk, before, after)
        progress.update(n)
    final = fcols.flush(states, END_OF_STREAM)
    if runner is None:
        _emit_all(sink, final.emits())
    else:
        for bar in final.bars:
            sink.emit(tn.MD_BARS, bar)
        if final.features:
            runner.inject_many(tn.FEATURES, final.features)
        runner.end_of_stream()
    return n


def _tick_columns(valid: RawTickColumns, src: TickInput, ticks: list[Tick] | None
                  ) -> TickColumns:
    """The valid rows as the features accelerator's input: one code per trimmed symbol."""
    index: dict[str, int] = {}
    table = [index.setdefault(s.strip(), len(index)) for s in valid.symbol_names]
    table.append(index.setdefault(src.default_symbol or "", len(index)))  # code -1: default
    codes = np.asarray(table, dtype=np.int32)[valid.symbol_codes]
    return TickColumns(ts=valid.ts, price=valid.price, size=valid.size, symbol=codes,
                       symbols=tuple(index), venue=src.default_venue, line=valid.line,
                       source_file=src.label, ticks=ticks)


def _drive_chain(runner: LocalRunner, sink: TopicSink, res: BatchResult, chunk: TickColumns,
                 before: npt.NDArray[np.int64], after: int) -> None:
    """Replay one batch's outputs into the chain in the per-event path's order."""
    assert chunk.ticks is not None
    ticks = chunk.ticks
    late = dict(zip(res.late_rows.tolist(), res.late_watermarks.tolist(), strict=True))
    close_after = res.close_after.tolist()
    wm_after = [*before[1:].tolist(), after]
    j = 0
    nb = len(close_after)
    inject = runner.inject
    def closing(row: int) -> None:  # the bars this step closes, delivered together
        nonlocal j
        k = j
        while j < nb and close_after[j] <= row:
            sink.emit(tn.MD_BARS, res.bars[j])
            j += 1
        if j > k:
            runner.inject_many(tn.FEATURES, res.features[k:j])

    closing(-1)  # closed by the watermark carried into this batch
    for i in range(len(chunk)):
        t = ticks[i]
        inject(tn.MD_TICKS, t)
        w = late.get(i)
        if w is not None:
            sink.emit(tn.MD_TICKS_LATE, LateTick(ts_event=t.ts_event, tick=t, watermark=w))
        if j < nb and close_after[j] == i:
            closing(i)
        wa = wm_after[i]
        if wa > runner.watermark:
            runner.advance_watermark(wa)


def _emit_all(sink: TopicSink, emits: list[Emit]) -> None:
    for e in emits:
        sink.emit(e.topic, e.value)
