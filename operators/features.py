"""Window features: per-symbol event-time bars and their TA-Lib-equal feature vectors.

A tick older than the watermark is late and goes to ``md.ticks.late``; any other tick folds
into the open bar of its interval, and the first tick of a bar registers an event-time timer at
the bar's end. When the watermark reaches that end the bar closes (``close_bar``): a ``Bar`` on
``md.bars`` and a ``FeatureVector`` on ``features``. The columnar replay accelerator
(``jobs.accel.features_columns``) makes the same transitions over numpy batches of many
symbols and is tested to emit exactly this operator's message sequence.

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

from operators.contract import END_OF_STREAM, Context, Emit, Operator, stable_hash
from operators.domain.bars import (
    OpenBar,
    bar_start,
    format_duration,
    parse_duration,
)
from operators.domain.indicators import FEATURE_DEFINITIONS, FeatureValues, IndicatorState
from topics.catalog import topic
from topics.messages import Bar, FeatureVector, LateTick, SourceRef, Tick

BARS_TOPIC = topic("md.bars").name
FEATURES_TOPIC = topic("features").name
LATE_TOPIC = topic("md.ticks.late").name

NS_PER_SECOND = 1_000_000_000
MAX_BAR_NS = 366 * 86_400 * NS_PER_SECOND
FEATURE_SCHEMA = "fv1"

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


def bar_emits(bar: Bar, fv: FeatureVector) -> list[Emit]:
    """A closed bar's two outputs, in the order every path emits them."""
    return [Emit(BARS_TOPIC, bar.symbol, bar), Emit(FEATURES_TOPIC, fv.symbol, fv)]


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
            bar, fv = self.close_bar(state, bars.pop(0), ctx.watermark)
            out += bar_emits(bar, fv)
        return state, out

    def pending_timers(self, state: FeatureState) -> list[int]:
        """Bar ends still awaited: what a runtime re-registers after restoring this state."""
        return [ob.start + self._bar_ns for ob in state.open_bars]

    def close_bar(
        self, state: FeatureState, ob: OpenBar, watermark: int
    ) -> tuple[Bar, FeatureVector]:
        """A finished bar and its vector; advances the symbol's indicators by it.

        ``watermark`` is the one that closed the bar; at end of stream the bar is known at its
        end (no later tick exists to have closed it). The per-key step both paths share: the
        columnar accelerator closes its bars through this call too.
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
