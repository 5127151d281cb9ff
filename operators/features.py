"""Window features: per-symbol event-time bars and their TA-Lib-equal feature vectors.

Two paths with one meaning:

- **per event** (``process`` / ``on_timer``): the reference. A tick older than the watermark
  is late and goes to ``md.ticks.late``; any other tick folds into the open bar of its
  interval, and the first tick of a bar registers an event-time timer at the bar's end. When
  the watermark reaches that end the bar closes: a ``Bar`` on ``md.bars`` and a
  ``FeatureVector`` on ``features``.
- **batched** (``process_columns`` / ``flush``): the same transitions over columnar numpy
  batches, for replays and hot paths. It emits exactly the message sequence the per-event path
  emits when the runtime fires timers in ``(ts, key)`` order after every event; bars still open
  at the end of a batch stay in the states and continue in the next one.

The watermark comes from the runtime (max event time seen minus the allowed lateness): the
operator only compares against it, so lateness is a property of the data, not of timing.

A ``FeatureVector``'s ``ts_event`` is its bar's *end*, the first instant it can be known: a
consumer that acts at ``ts_event`` cannot trade on ticks the features already contain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt

from operators.contract import END_OF_STREAM, Context, Emit, Operator, stable_hash
from operators.domain.bars import (
    OpenBar,
    TickColumns,
    bar_start,
    fold_bars,
    format_duration,
    parse_duration,
)
from operators.domain.indicators import FEATURE_DEFINITIONS, FeatureValues, IndicatorState
from topics.messages import Bar, FeatureVector, LateTick, SourceRef, Tick

BARS_TOPIC = "md.bars"
FEATURES_TOPIC = "features"
LATE_TOPIC = "md.ticks.late"

NS_PER_SECOND = 1_000_000_000
MAX_BAR_NS = 366 * 86_400 * NS_PER_SECOND
FEATURE_SCHEMA = "fv1"

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def feature_version(bar_ns: int) -> str:
    """``fv1-<8 hex>``: a stable digest of the feature names, their definitions and the bar."""
    return f"{FEATURE_SCHEMA}-{stable_hash(FEATURE_DEFINITIONS, bar_ns)[:8]}"


@dataclass(frozen=True, slots=True)
class FeaturesConfig:
    """Bar length in ns (default one minute); ``timeframe`` is its label, e.g. ``"5m"``."""

    bar_ns: int = 60 * NS_PER_SECOND
    lateness_ns: int = 0
    """The runtime's allowed lateness: ``watermark + lateness`` is the newest event time seen,
    which stamps ``FeatureVector.ts_closed`` (the instant a live system learns the bar)."""

    def __post_init__(self) -> None:
        if self.lateness_ns < 0:
            raise ValueError(f"lateness_ns must be >= 0, got {self.lateness_ns}")
        if isinstance(self.bar_ns, bool) or not isinstance(self.bar_ns, int):
            raise ValueError(f"bar_ns must be an int of nanoseconds, got {self.bar_ns!r}")
        if not 0 < self.bar_ns <= MAX_BAR_NS:
            raise ValueError(
                f"bar_ns must be in (0, {MAX_BAR_NS}] ns (366 days), got {self.bar_ns}"
            )

    @classmethod
    def from_bar(cls, bar: str | int = "1m") -> FeaturesConfig:
        """Config from a bar length such as ``"1m"``, ``"5m"``, ``"1h"``, ``"1d"`` or ns."""
        return cls(bar_ns=parse_duration(bar))

    @property
    def timeframe(self) -> str:
        return format_duration(self.bar_ns)


class FeatureState(msgspec.Struct):
    """One symbol's state: its open bars (ascending start), indicators and late count."""

    symbol: str
    open_bars: list[OpenBar] = msgspec.field(default_factory=list)
    indicators: IndicatorState = msgspec.field(default_factory=IndicatorState)
    late_count: int = 0
    source_file: str | None = None  # the file of the symbol's ticks (audit inputs)


def make_vector(
    symbol: str,
    *,
    timeframe: str,
    version: str,
    ts_event: int,
    close: float,
    v: FeatureValues,
    ts_closed: int | None = None,
    inputs: tuple[SourceRef, ...] = (),
) -> FeatureVector:
    return FeatureVector(
        ts_event=ts_event,
        symbol=symbol,
        timeframe=timeframe,
        feature_version=version,
        ts_closed=ts_event if ts_closed is None else ts_closed,
        inputs=inputs,
        close=close,
        ema_12=v[0],
        ema_26=v[1],
        macd=v[2],
        macd_signal=v[3],
        macd_hist=v[4],
        rsi_14=v[5],
        atr_14=v[6],
        vol_20=v[7],
        ret_1=v[8],
        ret_5=v[9],
        ret_20=v[10],
        volume_ratio=v[11],
        vwap_dist=v[12],
    )


@dataclass(frozen=True, slots=True, eq=False)
class BatchResult:
    """What one ``process_columns`` / ``flush`` call emitted.

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
                out += _bar_emits(self.bars[j], self.features[j])
                j += 1
            tick = batch.tick(row)
            late = LateTick(ts_event=tick.ts_event, tick=tick, watermark=wm)
            out.append(Emit(LATE_TOPIC, tick.symbol, late))
        for k in range(j, len(self.bars)):
            out += _bar_emits(self.bars[k], self.features[k])
        return out


def _bar_emits(bar: Bar, fv: FeatureVector) -> list[Emit]:
    return [Emit(BARS_TOPIC, bar.symbol, bar), Emit(FEATURES_TOPIC, fv.symbol, fv)]


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


class WindowFeatures(Operator[FeatureState, Tick]):
    """Ticks (key: symbol) -> ``md.bars`` + ``features``; late ticks -> ``md.ticks.late``."""

    UID = "window_features"
    STATE_VERSION = 1
    State = FeatureState

    def __init__(self, config: FeaturesConfig | None = None) -> None:
        self.config = config if config is not None else FeaturesConfig()
        self._bar_ns = self.config.bar_ns
        self._timeframe = self.config.timeframe
        self._version = feature_version(self._bar_ns)

    @property
    def feature_version(self) -> str:
        return self._version

    @property
    def timeframe(self) -> str:
        return self._timeframe

    def config_fingerprint(self) -> str:
        """Config plus feature version: a changed definition invalidates old snapshots."""
        raw = msgspec.json.encode(self.config) + self._version.encode()
        return hashlib.sha256(raw).hexdigest()[:16]

    # -- per-event path -------------------------------------------------------------------
    def key(self, event: Tick) -> str:
        return event.symbol

    def new_state(self, key: str) -> FeatureState:
        return FeatureState(symbol=key)

    def process(
        self, state: FeatureState, event: Tick, ctx: Context
    ) -> tuple[FeatureState, list[Emit]]:
        ts = event.ts_event
        watermark = ctx.watermark
        if ts < watermark:
            state.late_count += 1
            late = LateTick(ts_event=ts, tick=event, watermark=watermark)
            return state, [Emit(LATE_TOPIC, event.symbol, late)]
        start = bar_start(ts, self._bar_ns)
        src = event.source
        line = -1
        if src is not None and src.line is not None:
            line = src.line
            state.source_file = src.file
        bars = state.open_bars
        # The open bar is nearly always the newest one; older ones exist only with lateness.
        for i in range(len(bars) - 1, -1, -1):
            if bars[i].start == start:
                bars[i].add(event.price, event.size, line)
                return state, []
            if bars[i].start < start:
                bars.insert(i + 1, OpenBar.first(start, event.price, event.size, line))
                break
        else:
            bars.insert(0, OpenBar.first(start, event.price, event.size, line))
        ctx.register_timer(start + self._bar_ns)
        return state, []

    def on_timer(
        self, state: FeatureState, ts: int, ctx: Context
    ) -> tuple[FeatureState, list[Emit]]:
        out: list[Emit] = []
        bars = state.open_bars
        while bars and bars[0].start + self._bar_ns <= ts:
            bar, fv = self._close(state, bars.pop(0), ctx.watermark)
            out += _bar_emits(bar, fv)
        return state, out

    def pending_timers(self, state: FeatureState) -> list[int]:
        """Bar ends still awaited: what a runtime re-registers after restoring this state."""
        return [ob.start + self._bar_ns for ob in state.open_bars]

    def _close(
        self, state: FeatureState, ob: OpenBar, watermark: int
    ) -> tuple[Bar, FeatureVector]:
        """Emit a finished bar and advance the symbol's indicators by it.

        ``watermark`` is the one that closed the bar; at end of stream the bar is known at its
        end (no later tick exists to have closed it).
        """
        end = ob.start + self._bar_ns
        lateness = self.config.lateness_ns
        closed = end if watermark > END_OF_STREAM - lateness - 1 else max(end, watermark + lateness)
        vwap = ob.pv / ob.volume if ob.volume > 0.0 else None
        bar = Bar(
            ts_event=ob.start,
            symbol=state.symbol,
            timeframe=self._timeframe,
            ts_end=end,
            open=ob.open,
            high=ob.high,
            low=ob.low,
            close=ob.close,
            volume=ob.volume,
            vwap=vwap,
            trade_count=ob.count,
        )
        values = state.indicators.update(ob.high, ob.low, ob.close, ob.volume, vwap)
        fv = make_vector(
            state.symbol,
            timeframe=self._timeframe,
            version=self._version,
            ts_event=end,
            close=ob.close,
            v=values,
            ts_closed=closed,
            inputs=(SourceRef(file=state.source_file, line=ob.first_line),
                    SourceRef(file=state.source_file, line=ob.last_line))
            if ob.first_line >= 0 else (),
        )
        return bar, fv

    # -- batched path ---------------------------------------------------------------------
    def flush(self, states: dict[str, FeatureState], watermark: int) -> BatchResult:
        """Close every open bar with ``end <= watermark`` (``END_OF_STREAM``: all of them)."""
        return self.process_columns(states, _no_ticks(), _EMPTY_I64, watermark)

    def process_columns(
        self,
        states: dict[str, FeatureState],
        batch: TickColumns,
        watermarks: I64,
        watermark_after: int,
    ) -> BatchResult:
        """Apply a batch of ticks to ``states`` (updated in place, new symbols added).

        ``watermarks[i]`` is the watermark before row ``i`` and ``watermark_after`` the one
        after the last row (``bars.bounded_watermarks`` computes both); together they must not
        decrease, and ``watermarks[0]`` continues from the previous call's ``watermark_after``.
        Bars close when the watermark after a row reaches their end, ordered like the runtime
        fires timers: by row, then ``(end, symbol)``.
        """
        n = len(batch)
        bar_ns = self._bar_ns
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
            bar, fv = self._close(states[names[s_code[i]]], seg(i), w)
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
                st = states[name] = self.new_state(name)
            if batch.line is not None and batch.source_file is not None:
                st.source_file = batch.source_file
            if late is not None:
                st.late_count += int(late[c])


def features_from_bars(
    bars: Iterable[Bar], config: FeaturesConfig | None = None
) -> list[FeatureVector]:
    """Feature vectors of ready-made bars (e.g. daily OHLCV files), one per bar.

    The same indicator code as the streaming operator; bars of several symbols may be mixed,
    each symbol's in ascending time. Without ``config`` the bar length (and so the feature
    version) is taken from the first bar's ``ts_end - ts_event``.
    """
    states: dict[str, IndicatorState] = {}
    last_start: dict[str, int] = {}
    bar_ns = 0 if config is None else config.bar_ns
    version = "" if config is None else feature_version(bar_ns)
    out: list[FeatureVector] = []
    for bar in bars:
        length = bar.ts_end - bar.ts_event
        if not version:
            bar_ns = length
            version = feature_version(bar_ns)
        if length != bar_ns:
            raise ValueError(
                f"{bar.symbol}: bar at {bar.ts_event} lasts {length} ns, expected {bar_ns}"
            )
        prev = last_start.get(bar.symbol)
        if prev is not None and bar.ts_event <= prev:
            raise ValueError(f"{bar.symbol}: bars must ascend in time ({bar.ts_event} <= {prev})")
        last_start[bar.symbol] = bar.ts_event
        ind = states.get(bar.symbol)
        if ind is None:
            ind = states[bar.symbol] = IndicatorState()
        values = ind.update(bar.high, bar.low, bar.close, bar.volume, bar.vwap)
        out.append(
            make_vector(
                bar.symbol,
                timeframe=bar.timeframe,
                version=version,
                ts_event=bar.ts_end,
                close=bar.close,
                v=values,
            )
        )
    return out
