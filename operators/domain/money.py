"""Fixed-point money: amounts as integers of 10**-8 of the account currency.

Binary floats cannot hold most decimal amounts (0.10 USD is not a float), and sums of them
drift (a realized PnL of -10,025.00 came out as -10,024.9999999999). The ledger therefore
keeps cash, cost basis, realized PnL and fees as integers of ``UNIT`` = 10**-8 currency units,
and converts to ``float`` only to publish. The rounding rules (docs/risk.md, "Money"):

- an amount given as a float (initial equity, a fee) means the decimal number it prints as
  (its shortest ``repr``), so ``0.1`` is ten cents, not 0.1000000000000000055511...;
- a notional ``quantity × price × multiplier`` is the exact product of those decimals,
  rounded half-even to the unit;
- fees are rounded half-up to the cent (``round_fee``), as venues bill them;
- published figures (topics, summary) are the unit count divided by 10**8: the float nearest
  the decimal value, which prints with at most eight decimals; the summary rounds to the cent.

Fast path: when ``|quantity × price × multiplier| × 10**8`` stays below 2**48 (about
2.8 million currency units) the float product, inputs' own rounding included, is within
0.2 units of the exact one, so rounding it gives the exact integer for every amount that is a
whole number of units (all ES notionals, for example) without building Decimals on the
per-tick path. Larger amounts take the Decimal path.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal
from fractions import Fraction

SCALE = 100_000_000
"""Units per currency unit (10**-8)."""
_CENT = SCALE // 100
FAST_LIMIT = float(2**48)
"""Below this many units a float product rounds to the exact notional (see above)."""
_CTX = Context(prec=60, rounding=ROUND_HALF_EVEN)
_SCALE_D = Decimal(SCALE)


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def to_units(amount: float) -> int:
    """A currency amount (the decimal its float prints as) in units, half-even."""
    return int(_CTX.multiply(_dec(amount), _SCALE_D).to_integral_value(ROUND_HALF_EVEN))


def from_units(units: int) -> float:
    """Publish units as a float (correctly rounded: ``int / int`` is exact then rounded once)."""
    return units / SCALE


def notional_units(quantity: float, price: float, multiplier: float) -> int:
    """``quantity × price × multiplier`` in units (signed like ``quantity``), half-even."""
    x = quantity * price * multiplier * SCALE
    if -FAST_LIMIT < x < FAST_LIMIT:
        return round(x)
    d = _CTX.multiply(_CTX.multiply(_CTX.multiply(_dec(quantity), _dec(price)),
                                    _dec(multiplier)), _SCALE_D)
    return int(d.to_integral_value(ROUND_HALF_EVEN))


def pro_rata(units: int, part: float, whole: float) -> int:
    """``units × part / whole`` rounded half-even (the cost basis of a partial close)."""
    if part == whole:
        return units
    if part.is_integer() and whole.is_integer():
        return round(Fraction(units * int(part), int(whole)))
    return round(Fraction(units) * Fraction(part) / Fraction(whole))


def round_fee(amount: Decimal) -> float:
    """A fee rounded half-up to the cent (venues bill whole cents)."""
    return float(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def fee_amount(quantity: float, price: float, multiplier: float, per_contract: float,
               bps: float) -> float:
    """Per-contract plus basis points of notional, on the decimals, rounded to the cent."""
    fee = _CTX.multiply(_dec(quantity), _dec(per_contract))
    if bps:
        notional = _CTX.multiply(_CTX.multiply(_dec(quantity), _dec(price)), _dec(multiplier))
        fee = _CTX.add(fee, _CTX.divide(_CTX.multiply(notional, _dec(bps)), Decimal(10_000)))
    return round_fee(fee)


def to_cents(amount: float) -> int:
    """A published amount (a float of at most eight decimals) rounded half-even to cents."""
    return int(_CTX.multiply(_dec(amount), Decimal(100)).to_integral_value(ROUND_HALF_EVEN))


def cents_to_float(cents: int) -> float:
    """Cents as the float that prints with at most two decimals."""
    return cents / 100


def units_to_cents(units: int) -> int:
    """Units rounded half-even to cents."""
    return round(Fraction(units, _CENT))
