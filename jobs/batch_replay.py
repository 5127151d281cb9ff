"""The batched replay: normalize and window features on the columnar accelerator, in chunks.

The accelerator (``jobs.accel``) works across keys at once, which no keyed runtime can host;
this driver feeds it a tick file and hands its outputs to the bar-rate stages, which run on
the same local runner as the per-event path, fed in the per-event order. Trades reach the
account operator over columns while the accounts are quiet (``jobs.accel.account_columns``)
and per event otherwise; a ``Tick`` message is built only for a row that goes per event or
when a tap or the capture reads ``md.ticks`` (its file is written as text from the columns,
``NormalizeColumns.tick_lines``). The topic files are byte-identical to the per-event path's
(tested).

The file streams through chunk by chunk (``jobs.tick_files.iter_tick_columns``): each chunk
is validated, turned into ticks, folded into bars and handed on before the next one is read,
so memory does not grow with the file. What spans chunks is carried explicitly, exactly as the
per-event path carries it: normalize's dedupe states and newest valid time (the watermark its
forward-jump check uses), the features' open bars and the watermark. Chunk boundaries do not
change a byte of output (tested with chunks of a few rows).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from jobs.accel.account_columns import AccountBypass, ChainStats
from jobs.accel.features_columns import BatchResult, FeaturesColumns
from jobs.accel.normalize_columns import NormalizeColumns, RawTickColumns, TickFields
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
from operators.infer import Infer
from operators.normalize import Normalize
from topics import names as tn
from topics.messages import Control, LateTick, Tick

CHUNK = 65_536
_MIN_STRETCH = 4
"""Fewer rows to the next bar close than this go per event (a stretch has fixed costs)."""


def run_batch_ticks(src: TickInput, norm: Normalize, feats: WindowFeatures,
                    chain: tuple[Stage, ...], sink: TopicSink, lateness_ns: int,
                    controls: list[Control], progress: Progress, *,
                    block_bytes: int | None = BLOCK_BYTES, max_lines: int | None = None,
                    columnar_chain: bool = True, tick_text: bool = True,
                    stats: ChainStats | None = None) -> int:
    """Normalize + features over columns, the decision chain behind them.

    Writes the same topic files as ``run_event_ticks``: each tick reaches the chain, then the
    bars its watermark closes, then the watermark itself, exactly as the event path orders
    them. Stretches of trades that only move the accounts' marks go to the account operator
    as columns (``jobs.accel.account_columns``) and each chunk's feature vectors are scored
    together (``Infer.prime``); ``columnar_chain=False`` sends every trade per event and
    scores one vector at a time, the reference the tests compare with. With ``tick_text``
    (and ``columnar_chain``) the ``md.ticks`` file is written as text from the columns when
    nothing else reads the topic, rather than from ``Tick`` messages; ``stats`` counts
    which way the trades went. The file is read in chunks of about ``block_bytes`` (at most
    ``max_lines`` lines); returns the number of records read.
    """
    ncols = NormalizeColumns(norm)
    fcols = FeaturesColumns(feats)
    stats = ChainStats() if stats is None else stats
    runner: LocalRunner | None = None
    bypass: AccountBypass | None = None
    if chain:
        graph = Graph(tn.MD_TICKS, chain, external=(tn.FEATURES, tn.CONTROL))
        runner = LocalRunner(graph, sink, lateness_ns=lateness_ns)
        if columnar_chain:
            bypass = AccountBypass.of(graph, runner, sink)
        for c in controls:
            runner.inject(tn.CONTROL, c)
    # inference over every vector of a chunk at once (``Infer.prime``)
    primed = [st.operator for st in chain if isinstance(st.operator, Infer)] \
        if columnar_chain else []
    # md.ticks written as text straight from the columns when only its file reads it
    # (``NormalizeColumns.tick_lines``); the sink then only counts the messages
    write_lines = sink.take_lines(tn.MD_TICKS) if columnar_chain and tick_text else None
    # every Tick is built up front when someone reads each one; otherwise only the rows the
    # per-event code needs (the chain's non-quiet rows, late ticks)
    eager = sink.needs_messages(tn.MD_TICKS) or (runner is not None and bypass is None)
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
        ticks: Sequence[Tick] = ncols.ticks(valid, np.ones(len(valid), dtype=bool)) \
            if eager else LazyTicks(ncols, valid)
        bt = _tick_columns(valid, src, ticks)
        if write_lines is not None:
            write_lines(ncols.tick_lines(valid))  # counted as the rows reach the chain
        if runner is None:
            if eager:
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
                for op in primed:
                    op.prime(res.features)
                _drive_chain(runner, sink, res, chunk, before, after, bypass, stats)
        progress.update(n)
    final = fcols.flush(states, END_OF_STREAM)
    if runner is None:
        _emit_all(sink, final.emits())
    else:
        for bar in final.bars:
            sink.emit(tn.MD_BARS, bar)
        if final.features:
            for op in primed:
                op.prime(final.features)
            runner.inject_many(tn.FEATURES, final.features)
        runner.end_of_stream()
    return n


class LazyTicks(Sequence[Tick]):
    """A chunk's rows as ``Tick`` messages, built when asked for: the batched chain needs
    few of them. The first request takes every row's fields as Python lists at once
    (``NormalizeColumns.tick_fields``); each tick is then one struct built from them."""

    def __init__(self, ncols: NormalizeColumns, cols: RawTickColumns, base: int = 0,
                 stop: int | None = None, fields: list[TickFields] | None = None) -> None:
        self._ncols = ncols
        self._cols = cols
        self._base = base
        self._stop = len(cols) if stop is None else stop
        self._fields: list[TickFields] = [] if fields is None else fields  # shared by slices

    def __len__(self) -> int:
        return self._stop - self._base

    @overload
    def __getitem__(self, i: int) -> Tick: ...

    @overload
    def __getitem__(self, i: slice) -> LazyTicks: ...

    def __getitem__(self, i: int | slice) -> Tick | LazyTicks:
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step != 1:
                raise ValueError("LazyTicks slices have step 1")
            return LazyTicks(self._ncols, self._cols, self._base + lo, self._base + hi,
                             self._fields)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        if not self._fields:
            self._fields.append(self._ncols.tick_fields(self._cols,
                                                        np.arange(len(self._cols))))
        return self._fields[0].tick(self._base + i)


def _tick_columns(valid: RawTickColumns, src: TickInput, ticks: Sequence[Tick]) -> TickColumns:
    """The valid rows as the features accelerator's input: one code per trimmed symbol."""
    index: dict[str, int] = {}
    table = [index.setdefault(s.strip(), len(index)) for s in valid.symbol_names]
    table.append(index.setdefault(src.default_symbol or "", len(index)))  # code -1: default
    codes = np.asarray(table, dtype=np.int32)[valid.symbol_codes]
    return TickColumns(ts=valid.ts, price=valid.price, size=valid.size, symbol=codes,
                       symbols=tuple(index), venue=src.default_venue, line=valid.line,
                       source_file=src.label, ticks=ticks)


def _drive_chain(runner: LocalRunner, sink: TopicSink, res: BatchResult, chunk: TickColumns,
                 before: npt.NDArray[np.int64], after: int, bypass: AccountBypass | None,
                 stats: ChainStats) -> None:
    """Replay one batch's outputs into the chain in the per-event path's order.

    Rows up to the next bar close go to the account over columns while every account they
    reach is quiet (``AccountBypass``); the others, and each bar-closing row, per event.
    """
    assert chunk.ticks is not None
    ticks = chunk.ticks
    late_rows = res.late_rows.tolist()  # ascending
    late = dict(zip(late_rows, res.late_watermarks.tolist(), strict=True))
    close_after = res.close_after.tolist()
    wm_after_arr = np.empty(len(chunk), dtype=np.int64)
    wm_after_arr[:-1] = before[1:]
    if len(chunk):
        wm_after_arr[-1] = after
    wm_after = wm_after_arr.tolist()
    j = 0
    nb = len(close_after)
    inject = runner.inject
    routes = tuple(bypass.feed.accounts_for(s) for s in chunk.symbols) if bypass else ()
    accounts = tuple(dict.fromkeys(a for accs in routes for a in accs))
    needs_ticks = sink.needs_messages(tn.MD_TICKS)

    def closing(row: int) -> None:  # the bars this step closes, delivered together
        nonlocal j
        k = j
        while j < nb and close_after[j] <= row:
            sink.emit(tn.MD_BARS, res.bars[j])
            j += 1
        if j > k:
            runner.inject_many(tn.FEATURES, res.features[k:j])

    closing(-1)  # closed by the watermark carried into this batch
    n = len(chunk)
    i = 0
    while i < n:
        stop = close_after[j] if j < nb else n  # the next bar-closing row (per event)
        until = bypass.quiet_until(accounts) if bypass is not None and \
            stop - i >= _MIN_STRETCH else None
        if until is not None:
            assert bypass is not None
            done = bypass.run(chunk.ts[i:stop], chunk.price[i:stop], chunk.size[i:stop],
                              chunk.symbol[i:stop], chunk.symbols, routes,
                              wm_after_arr[i:stop], _offset(ticks, i), until)
            if done:
                stats.columnar += done
                stats.stretches += 1
                if needs_ticks:
                    for r in range(i, i + done):
                        sink.emit(tn.MD_TICKS, ticks[r])
                else:
                    sink.counts[tn.MD_TICKS] += done
                if late:
                    for r in late_rows[bisect_left(late_rows, i):bisect_left(late_rows,
                                                                             i + done)]:
                        t = ticks[r]
                        sink.emit(tn.MD_TICKS_LATE, LateTick(ts_event=t.ts_event, tick=t,
                                                             watermark=late[r]))
                i += done
                continue
        t = ticks[i]
        stats.per_event += 1
        inject(tn.MD_TICKS, t)
        w = late.get(i)
        if w is not None:
            sink.emit(tn.MD_TICKS_LATE, LateTick(ts_event=t.ts_event, tick=t, watermark=w))
        if j < nb and close_after[j] == i:
            closing(i)
        wa = wm_after[i]
        if wa > runner.watermark:
            runner.advance_watermark(wa)
        i += 1


def _offset(ticks: Sequence[Tick], i: int) -> Callable[[int], Tick]:
    return lambda k: ticks[i + k]


def _emit_all(sink: TopicSink, emits: list[Emit]) -> None:
    for e in emits:
        sink.emit(e.topic, e.value)
