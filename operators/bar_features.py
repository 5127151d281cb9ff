"""Features from ready-made bars (daily or intraday OHLCV files): the ``--bars`` input path.

The same incremental indicators as ``WindowFeatures``, fed one bar at a time instead of
aggregating ticks, so a bar file and the ticks that built it give the same vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from operators.contract import Context, Emit, Operator
from operators.domain.indicators import IndicatorState
from operators.features import FEATURES_TOPIC, feature_version, make_vector
from topics.messages import Bar


@dataclass(frozen=True, slots=True)
class BarFeaturesConfig:
    bar_ns: int

    def __post_init__(self) -> None:
        if self.bar_ns <= 0:
            raise ValueError(f"bar_ns must be > 0, got {self.bar_ns}")


class BarFeaturesState(msgspec.Struct):
    indicators: IndicatorState = msgspec.field(default_factory=IndicatorState)
    last_start: int | None = None


class BarFeatures(Operator[BarFeaturesState, Bar]):
    """Keyed by symbol; one ``FeatureVector`` per input bar (``ts_event`` = the bar's end)."""

    UID = "bar_features"
    STATE_VERSION = 1
    State = BarFeaturesState

    def __init__(self, config: BarFeaturesConfig) -> None:
        self.config = config
        self.feature_version = feature_version(config.bar_ns)

    def key(self, event: Bar) -> str:
        return event.symbol

    def new_state(self, key: str) -> BarFeaturesState:
        return BarFeaturesState()

    def process(
        self, state: BarFeaturesState, event: Bar, ctx: Context
    ) -> tuple[BarFeaturesState, list[Emit]]:
        if state.last_start is not None and event.ts_event <= state.last_start:
            raise ValueError(
                f"{event.symbol}: bars must ascend in time ({event.ts_event} after "
                f"{state.last_start})"
            )
        state.last_start = event.ts_event
        values = state.indicators.update(event.high, event.low, event.close, event.volume,
                                         event.vwap)
        fv = make_vector(event.symbol, timeframe=event.timeframe, version=self.feature_version,
                         ts_event=event.ts_end, close=event.close, v=values)
        return state, [Emit(FEATURES_TOPIC, event.symbol, fv)]
