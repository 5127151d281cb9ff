"""Window features over columns: many symbols' ticks folded and closed in one call.

It makes the transitions of ``WindowFeatures`` (the reference, per event) over numpy batches:
ticks fold into bars with ``bar_fold`` and every closed bar goes through the operator's own
``close_bar``. It emits exactly the message sequence the per-event path emits when the runtime
fires timers in ``(ts, key)`` order after every event; bars still open at the end of a batch
stay in the states and continue in the next one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from jobs.accel.bar_fold import fold_bars
from jobs.accel.tick_columns import TickColumns
from operators.contract import Emit
from operators.domain.bars import OpenBar
from operators.features import LATE_TOPIC, FeatureState, WindowFeatures, bar_emits
from topics.messages import Bar, FeatureVector, LateTick

I64 = npt.NDArray[np.int64]

_EMPTY_I64: I64 = np.empty(0, dtype=np.int64)
_EMPTY_I64.setflags(write=False)


def _no_ticks() -> TickColumns:
    return TickColumns(
        ts=_EMPTY_I64,
        price=np.empty(0, np.float64),
        size=np.empty(0, np.float64),
        symbol=_EMPTY_I64,
        symbols=(),
    )


@dataclass(frozen=True, slots=True, eq=False)
class BatchResult:
    """What one ``FeaturesColumns.process`` / ``flush`` call emitted.

    - ``late_rows``: ascending batch rows whose tick was late (``ts < watermark``);
      ``late_watermarks`` the watermark each was judged against.
    - ``bars[i]`` / ``features[i]``: the closed bars and their vectors, in emission order.
    - ``close_after[i]``: the batch row after which ``bars[i]`` closed (``-1``: before the
      first row, e.g. in a ``flush``). A late tick at row ``r`` is emitted before the bars
      with ``close_after == r``.
    """

    late_rows: I64
    late_watermarks: I64
    bars: list[Bar]
    features: list[FeatureVector]
    close_after: I64

    def emits(self, batch: TickColumns | None = None) -> list[Emit]:
        """The full output in the per-event path's order, late ticks rebuilt from ``batch``."""
        if batch is None:
            if self.late_rows.size:
                raise ValueError("late ticks to report: pass the batch they came from")
            batch = _no_ticks()
        out: list[Emit] = []
        after = self.close_after.tolist()
        j = 0
        for row, wm in zip(self.late_rows.tolist(), self.late_watermarks.tolist(), strict=True):
            while j < len(after) and after[j] < row:
                out += bar_emits(self.bars[j], self.features[j])
                j += 1
            tick = batch.tick(row)
            late = LateTick(ts_event=tick.ts_event, tick=tick, watermark=wm)
            out.append(Emit(LATE_TOPIC, tick.symbol, late))
        for k in range(j, len(self.bars)):
            out += bar_emits(self.bars[k], self.features[k])
        return out


class FeaturesColumns:
    """The columnar twin of one ``WindowFeatures`` operator; states are per-symbol
    ``FeatureState`` objects, the same ones the operator keeps per key."""

    def __init__(self, op: WindowFeatures) -> None:
        self.op = op

    def flush(self, states: dict[str, FeatureState], watermark: int) -> BatchResult:
        """Close every open bar with ``end <= watermark`` (``END_OF_STREAM``: all of them)."""
        return self.process(states, _no_ticks(), _EMPTY_I64, watermark)

    def process(
        self,
        states: dict[str, FeatureState],
        batch: TickColumns,
        watermarks: I64,
        watermark_after: int,
    ) -> BatchResult:
        """Apply a batch of ticks to ``states`` (updated in place, new symbols added).

        ``watermarks[i]`` is the watermark before row ``i`` and ``watermark_after`` the one
        after the last row (``bounded_watermarks`` computes both); together they must not
        decrease, and ``watermarks[0]`` continues from the previous call's ``watermark_after``.
        Bars close when the watermark after a row reaches their end, ordered like the runtime
        fires timers: by row, then ``(end, symbol)``.
        """
        n = len(batch)
        bar_ns = self.op.config.bar_ns
        wm = np.asarray(watermarks, dtype=np.int64)
        if wm.shape != (n,):
            raise ValueError(f"watermarks must have one entry per row ({n}), got {wm.shape}")
        w_seq = np.empty(n + 1, dtype=np.int64)
        w_seq[:n] = wm
        w_seq[n] = watermark_after
        if n and bool(np.any(w_seq[1:] < w_seq[:-1])):
            raise ValueError("watermarks must not decrease")

        ts = batch.ts
        late_mask = ts < wm
        late_rows = np.flatnonzero(late_mask).astype(np.int64)
        codes = batch.symbol.astype(np.int64, copy=False)

        names = list(batch.symbols)
        code_of = {s: i for i, s in enumerate(names)}
        for s in states:
            if s not in code_of:
                code_of[s] = len(names)
                names.append(s)
        if n:
            self._touch_states(states, batch, codes, late_rows)

        if late_rows.size:
            keep = ~late_mask
            ts_ok, price, size, code_ok = ts[keep], batch.price[keep], batch.size[keep], codes[keep]
        else:
            ts_ok, price, size, code_ok = ts, batch.price, batch.size, codes

        # Bars still open from earlier batches continue: fold_bars seeds each group with them.
        carried = [(code_of[name], ob) for name, st in states.items() for ob in st.open_bars]
        for st in states.values():
            st.open_bars = []
        lines = batch.line
        if lines is not None and late_rows.size:
            lines = lines[~late_mask]
        segs = fold_bars(code_ok, ts_ok, price, size, bar_ns=bar_ns, carried=carried, line=lines)
        if len(segs) == 0:
            return BatchResult(late_rows, wm[late_rows], [], [], _EMPTY_I64.copy())
        seg_code, seg_start = segs.code, segs.start

        # A bar closes after the first row whose following watermark reaches its end.
        seg_end = seg_start + bar_ns
        idx = np.searchsorted(w_seq, seg_end, side="left").astype(np.int64)
        closed = idx <= n
        ranks = np.empty(len(names), dtype=np.int64)
        ranks[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
        closed_i = np.flatnonzero(closed)
        sel = closed_i[np.lexsort((ranks[seg_code[closed_i]], seg_end[closed_i], idx[closed_i]))]

        s_code, s_start = seg_code.tolist(), seg_start.tolist()
        s_open, s_high, s_low = segs.open.tolist(), segs.high.tolist(), segs.low.tolist()
        s_close, s_vol = segs.close.tolist(), segs.volume.tolist()
        s_pv, s_cnt = segs.pv.tolist(), segs.count.tolist()
        s_l0, s_l1 = segs.first_line.tolist(), segs.last_line.tolist()

        def seg(i: int) -> OpenBar:
            return OpenBar(
                s_start[i], s_open[i], s_high[i], s_low[i], s_close[i], s_vol[i], s_pv[i],
                s_cnt[i], s_l0[i], s_l1[i]
            )

        bars: list[Bar] = []
        feats: list[FeatureVector] = []
        closing_wm = w_seq[idx[sel]].tolist()
        for i, w in zip(sel.tolist(), closing_wm, strict=True):
            bar, fv = self.op.close_bar(states[names[s_code[i]]], seg(i), w)
            bars.append(bar)
            feats.append(fv)
        for i in np.flatnonzero(~closed).tolist():  # (symbol, start) order: ascending starts
            states[names[s_code[i]]].open_bars.append(seg(i))
        return BatchResult(late_rows, wm[late_rows], bars, feats, idx[sel] - 1)

    def _touch_states(
        self,
        states: dict[str, FeatureState],
        batch: TickColumns,
        codes: I64,
        late_rows: I64,
    ) -> None:
        """Create the state of every symbol in the batch (as the runtime does per event) and
        count its late ticks."""
        nsym = len(batch.symbols)
        present = np.bincount(codes, minlength=nsym)
        late = np.bincount(codes[late_rows], minlength=nsym) if late_rows.size else None
        for c in np.flatnonzero(present).tolist():
            name = batch.symbols[c]
            st = states.get(name)
            if st is None:
                st = states[name] = self.op.new_state(name)
            if batch.line is not None and batch.source_file is not None:
                st.source_file = batch.source_file
            if late is not None:
                st.late_count += int(late[c])
