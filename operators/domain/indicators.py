"""Incremental indicators that reproduce TA-Lib's batch functions bit for bit.

Each indicator is a small mutable ``msgspec.Struct`` advanced one bar at a time, so it
snapshots with the operator state and a restored run continues exactly where it stopped.
The reference is the TA-Lib C core bundled with the ``ta-lib`` 0.8.2 wheel (it reports
itself as "0.8.1"). That core is generated code whose arithmetic differs from the classic
0.4/0.6 sources in ways that move the last bits, so every recursion below performs the same
operations, in the same order and with the same fused multiply-adds, as that build (each was
checked against the installed library; the parity tests keep checking):

- EMA: seeded with the SMA of its first ``n`` inputs (summed left to right from 0.0), then
  ``fma(x - ema, k, ema)`` with ``k = 2 / (n + 1)``.
- MACD(12, 26, 9): two such EMAs; the fast one is seeded on the slow one's seed bar with the
  SMA of closes ``[14..25]``; the signal EMA is seeded with the SMA of the first 9 MACD
  values; the three outputs start at bar 33.
- RSI: Wilder smoothing written as ``avg *= n-1; avg += delta; avg *= 1/n`` (a hoisted
  reciprocal, no division) and seeded with the first ``n`` gains/losses scaled by ``1/n``;
  the output is 0 when ``gain + loss`` is exactly zero (no epsilon band in this build).
- ATR: true range undefined on bar 0; seeded with the mean of TR[1..n]; then the fused
  two-coefficient Wilder step ``fma(beta, atr, alpha * tr)``, ``beta = (n-1)/n``,
  ``alpha = 1 - beta``.
- ROCP: ``(x - prev) / prev``, 0 when ``prev == 0``.
- VAR/STDDEV: running sums of deviations from a *shift* (the first value, then the window
  mean at every re-seed), re-seeded with a fresh two-pass when cancellation threatens or every
  ``32 * n`` windows; ``sqrt`` only of a positive variance.
- SMA: a running total; add the new value, keep the total, subtract the trailing value,
  divide the kept total.
"""

from __future__ import annotations

import math

import msgspec


def fma(a: float, b: float, c: float) -> float:
    """``a * b + c`` rounded once, like C's ``fma`` (``math.fma`` arrives in Python 3.13).

    Exact rational arithmetic on the binary fractions, then CPython's correctly rounded
    integer division; a zero or non-finite result falls back to float arithmetic, which then
    gives the IEEE answer (sign of zero, infinities, NaN).
    """
    try:
        na, da = a.as_integer_ratio()
        nb, db = b.as_integer_ratio()
        nc, dc = c.as_integer_ratio()
    except (OverflowError, ValueError):
        return a * b + c
    num = na * nb * dc + nc * da * db
    if num == 0:
        return a * b + c
    try:
        return num / (da * db * dc)
    except OverflowError:
        return a * b + c


# The feature definitions hashed into ``feature_version``: change one, the version changes.
FEATURE_DEFINITIONS: tuple[tuple[str, str], ...] = (
    ("ema_12", "EMA(close,12)"),
    ("ema_26", "EMA(close,26)"),
    ("macd", "MACD(close,12,26,9).macd"),
    ("macd_signal", "MACD(close,12,26,9).signal"),
    ("macd_hist", "MACD(close,12,26,9).hist"),
    ("rsi_14", "RSI(close,14)"),
    ("atr_14", "ATR(high,low,close,14)"),
    ("vol_20", "STDDEV(ROCP(close,1),20,1.0)"),
    ("ret_1", "ROCP(close,1)"),
    ("ret_5", "ROCP(close,5)"),
    ("ret_20", "ROCP(close,20)"),
    ("volume_ratio", "volume/SMA(volume,20)"),
    ("vwap_dist", "close/vwap-1"),
)

FeatureValues = tuple[
    float | None,  # ema_12
    float | None,  # ema_26
    float | None,  # macd
    float | None,  # macd_signal
    float | None,  # macd_hist
    float | None,  # rsi_14
    float | None,  # atr_14
    float | None,  # vol_20
    float | None,  # ret_1
    float | None,  # ret_5
    float | None,  # ret_20
    float | None,  # volume_ratio
    float | None,  # vwap_dist
]


class Ema(msgspec.Struct, array_like=True):
    """EMA seeded with an SMA; ``skip`` ignores leading inputs (MACD's aligned fast EMA)."""

    period: int
    skip: int = 0
    seen: int = 0
    seed_sum: float = 0.0
    value: float | None = None

    def update(self, x: float) -> float | None:
        if self.value is not None:
            # TA-Lib: fma(in - prev, k, prev) with k = 2.0 / (double)(n + 1).
            self.value = fma(x - self.value, 2.0 / (self.period + 1), self.value)
            return self.value
        self.seen += 1
        if self.seen > self.skip:
            self.seed_sum += x
            if self.seen - self.skip == self.period:
                self.value = self.seed_sum / self.period
        return self.value


class Macd(msgspec.Struct, array_like=True):
    """MACD with TA-Lib's alignment: the fast EMA skips ``slow - fast`` leading closes."""

    fast: Ema
    slow: Ema
    signal: Ema

    @classmethod
    def create(cls, fast: int = 12, slow: int = 26, signal: int = 9) -> Macd:
        if not 1 < fast < slow or signal < 1:
            raise ValueError(f"MACD needs 1 < fast < slow, signal >= 1: got {fast},{slow},{signal}")
        return cls(Ema(fast, skip=slow - fast), Ema(slow), Ema(signal))

    def update(self, x: float) -> tuple[float | None, float | None, float | None]:
        fast = self.fast.update(x)
        slow = self.slow.update(x)
        if fast is None or slow is None:
            return None, None, None
        macd = fast - slow
        signal = self.signal.update(macd)
        if signal is None:
            return None, None, None
        return macd, signal, macd - signal


class Rsi(msgspec.Struct, array_like=True):
    """Wilder's RSI in TA-Lib's form ``100 * gain / (gain + loss)``."""

    period: int
    seen: int = 0
    prev: float = 0.0
    gain: float = 0.0
    loss: float = 0.0

    def update(self, x: float) -> float | None:
        self.seen += 1
        if self.seen == 1:
            self.prev = x
            return None
        diff = x - self.prev
        self.prev = x
        n = self.period
        inv = 1.0 / n
        # TA-Lib splits the change without a branch: the loss delta is gain_delta - diff.
        gain_delta = diff if diff > 0.0 else 0.0
        if self.seen <= n + 1:
            # Warm-up: plain sums of the first n gains and losses, then one scaling.
            self.gain += gain_delta
            self.loss += gain_delta - diff
            if self.seen < n + 1:
                return None
        else:
            self.loss *= n - 1
            self.gain *= n - 1
            self.gain += gain_delta
            self.loss += gain_delta - diff
        self.loss *= inv
        self.gain *= inv
        total = self.gain + self.loss
        return 100.0 * (self.gain / total) if total > 0.0 else 0.0


class Atr(msgspec.Struct, array_like=True):
    """Average true range: mean of TR[1..n] as seed, then the fused Wilder step."""

    period: int
    seen: int = 0
    prev_close: float = 0.0
    tr_sum: float = 0.0
    value: float | None = None

    def update(self, high: float, low: float, close: float) -> float | None:
        self.seen += 1
        prev_close = self.prev_close
        self.prev_close = close
        if self.seen == 1:
            return None
        # TA-Lib TRANGE: start with high-low, replace by |prevclose-high|, |prevclose-low|.
        tr = high - low
        up = abs(prev_close - high)
        if up > tr:
            tr = up
        down = abs(prev_close - low)
        if down > tr:
            tr = down
        if self.value is None:
            self.tr_sum += tr
            if self.seen == self.period + 1:
                self.value = self.tr_sum / self.period
            return self.value
        beta = (self.period - 1) / self.period
        alpha = 1.0 - beta
        self.value = fma(beta, self.value, alpha * tr)
        return self.value


class Rocp(msgspec.Struct, array_like=True):
    """Rate of change as a fraction, over ``period`` bars."""

    period: int
    past: list[float] = msgspec.field(default_factory=list)

    def update(self, x: float) -> float | None:
        out: float | None = None
        if len(self.past) == self.period:
            prev = self.past.pop(0)
            out = (x - prev) / prev if prev != 0.0 else 0.0
        self.past.append(x)
        return out


class Sma(msgspec.Struct, array_like=True):
    """Simple moving average with TA-Lib's running total."""

    period: int
    window: list[float] = msgspec.field(default_factory=list)
    total: float = 0.0

    def update(self, x: float) -> float | None:
        self.window.append(x)
        self.total += x
        if len(self.window) < self.period:
            return None
        kept = self.total
        self.total -= self.window.pop(0)
        return kept / self.period


class StdDev(msgspec.Struct, array_like=True):
    """Population standard deviation with TA-Lib 0.8's shifted, re-seeded running sums."""

    period: int
    window: list[float] = msgspec.field(default_factory=list)
    shift: float = 0.0
    total1: float = 0.0
    total2: float = 0.0
    until_reseed: int = 0
    started: bool = False

    def variance(self, x: float) -> float | None:
        n = self.period
        inv = 1.0 / n
        window = self.window
        if not self.started:
            self.started = True
            self.shift = x
            self.until_reseed = 32 * n
        window.append(x)
        dev = x - self.shift
        self.total1 += dev
        dev *= dev
        self.total2 += dev
        if len(window) < n:
            return None
        mean = self.total1 * inv
        var = self.total2 * inv - mean * mean
        dev = window[0] - self.shift
        self.total1 -= dev
        dev *= dev
        self.total2 -= dev
        self.until_reseed -= 1
        if (
            var < 0.000001 * (self.total2 * inv)
            or dev > 1000000.0 * self.total2
            or (self.until_reseed <= 0)
        ):
            # Fresh two-pass over the current window, exactly as TA_VAR re-anchors.
            self.until_reseed = 32 * n
            acc = 0.0
            for v in window:
                acc += v
            self.shift = acc * inv
            t1 = 0.0
            t2 = 0.0
            for v in window:
                d = v - self.shift
                t1 += d
                d *= d
                t2 += d
            mean = t1 * inv
            var = t2 * inv - mean * mean
            d = window[0] - self.shift
            t1 -= d
            d *= d
            t2 -= d
            self.total1 = t1
            self.total2 = t2
        window.pop(0)
        return var

    def update(self, x: float) -> float | None:
        var = self.variance(x)
        if var is None:
            return None
        return math.sqrt(var) if var > 0.0 else 0.0


class IndicatorState(msgspec.Struct, array_like=True):
    """Every recursion behind one symbol's feature vector, advanced once per closed bar."""

    bars: int = 0
    ema_12: Ema = msgspec.field(default_factory=lambda: Ema(12))
    ema_26: Ema = msgspec.field(default_factory=lambda: Ema(26))
    macd: Macd = msgspec.field(default_factory=Macd.create)
    rsi_14: Rsi = msgspec.field(default_factory=lambda: Rsi(14))
    atr_14: Atr = msgspec.field(default_factory=lambda: Atr(14))
    ret_1: Rocp = msgspec.field(default_factory=lambda: Rocp(1))
    ret_5: Rocp = msgspec.field(default_factory=lambda: Rocp(5))
    ret_20: Rocp = msgspec.field(default_factory=lambda: Rocp(20))
    vol_20: StdDev = msgspec.field(default_factory=lambda: StdDev(20))
    volume_sma_20: Sma = msgspec.field(default_factory=lambda: Sma(20))

    def update(
        self, high: float, low: float, close: float, volume: float, vwap: float | None
    ) -> FeatureValues:
        """Advance by one bar; values in ``FeatureVector.NAMES`` order, ``None`` in warm-up."""
        self.bars += 1
        ema_12 = self.ema_12.update(close)
        ema_26 = self.ema_26.update(close)
        macd, signal, hist = self.macd.update(close)
        rsi = self.rsi_14.update(close)
        atr = self.atr_14.update(high, low, close)
        ret_1 = self.ret_1.update(close)
        ret_5 = self.ret_5.update(close)
        ret_20 = self.ret_20.update(close)
        # TA-Lib skips the leading NaN of ROCP(close, 1): the deviation starts on bar 1.
        vol_20 = self.vol_20.update(ret_1) if ret_1 is not None else None
        volume_sma = self.volume_sma_20.update(volume)
        volume_ratio = volume / volume_sma if volume_sma else None
        vwap_dist = close / vwap - 1.0 if vwap else None
        return (
            ema_12,
            ema_26,
            macd,
            signal,
            hist,
            rsi,
            atr,
            vol_20,
            ret_1,
            ret_5,
            ret_20,
            volume_ratio,
            vwap_dist,
        )
