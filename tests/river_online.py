"""A test-only operator with opaque state: one River online logistic regression per symbol.

Each complete feature vector first labels the previous one (did the close rise?) and trains the
symbol's model on it, then is scored by the model: the state is a live River estimator, which no
``msgspec.Struct`` can hold, so it is encoded by :class:`~operators.domain.codecs.PickleCodec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from river import compose, linear_model, optim, preprocessing

from operators.contract import Context, Emit, Operator
from operators.domain.codecs import PickleCodec
from operators.infer import decision_id_for
from topics.messages import FeatureVector, Prediction


@dataclass(frozen=True, slots=True)
class OnlineConfig:
    learning_rate: float = 0.01


class OnlineState:
    """One symbol's model, and the vector waiting for its label."""

    def __init__(self, learning_rate: float) -> None:
        self.model = compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate)),
        )
        self.pending: dict[str, float] | None = None
        self.last_close = 0.0
        self.learned = 0


class OnlineLogit(Operator[OnlineState, FeatureVector]):
    UID: ClassVar[str] = "river_logit"
    STATE_VERSION: ClassVar[int] = 1
    State = OnlineState
    CODEC: ClassVar[PickleCodec[OnlineState]] = PickleCodec(OnlineState, version=1,
                                                            libraries=("river",))

    def __init__(self, config: OnlineConfig, codec: PickleCodec[OnlineState] | None = None
                 ) -> None:
        self.config = config
        self._codec = codec or self.CODEC

    def state_codec(self) -> PickleCodec[OnlineState]:
        return self._codec

    def key(self, event: FeatureVector) -> str:
        return event.symbol

    def new_state(self, key: str) -> OnlineState:
        return OnlineState(self.config.learning_rate)

    def process(self, state: OnlineState, event: FeatureVector, ctx: Context
                ) -> tuple[OnlineState, list[Emit]]:
        if not event.complete:
            return state, []
        x = dict(zip(event.NAMES, event.values(), strict=True))
        if state.pending is not None:
            state.model.learn_one(state.pending, event.close > state.last_close)
            state.learned += 1
        prob = float(state.model.predict_proba_one(x).get(True, 0.5))
        state.pending, state.last_close = x, event.close
        return state, [Emit("predictions", event.symbol, Prediction(
            ts_event=event.ts_event, symbol=event.symbol, decision_id=decision_id_for(event),
            model=self.UID, model_version=f"online-{state.learned}", variant="A",
            regime="all", score=2.0 * prob - 1.0, prob_up=prob))]
