"""The decision chain's trades over columns: the account feed and the account operator's quiet
stretches, for the batched replay.

On the per-event path every trade goes through the account feed (one ``account.feed`` copy
per account trading its symbol), waits in the account's buffer until the watermark passes it
and is then applied by ``AccountOperator._on_tick``. When an account has no child orders (so
nothing working at the venue) and no trades buffered (``AccountOperator.quiet_until``), a trade
emits nothing and only moves marks, volume buckets, the session and the daily-loss flag until
the watermark reaches the next command or intent it buffers; this module hands such a stretch
to ``AccountOperator.quiet_ticks`` as columns instead.

What it must reproduce is the order in which the buffer would release the trades: an input
waits for the first watermark *advance* at or after its arrival that reaches its event time,
and each release is sorted by ``(ts, symbol, arrival)`` (:func:`release_steps`). A stretch
is cut where a trade would still be buffered at its end, or before the watermark reaches a
buffered command or intent, so every stretch leaves the accounts as the per-event path does;
the rows after it go per event until the accounts are quiet again (``jobs.batch_replay``).
The bypass is used only where the graph is the one ``jobs.topology`` builds around it (trades
reach only the feed, the feed only the account) and nobody reads ``account.feed`` messages (an
internal topic, only counted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from jobs.core.stage import StageHost
from jobs.graph import Graph
from jobs.local_runner import LocalRunner
from jobs.topic_sink import TopicSink
from operators.account import AccountOperator, QuietTicks
from operators.account_feed import AccountFeedRouter, AccountFeedState
from operators.contract import END_OF_STREAM
from topics import names as tn
from topics.messages import Tick

I64 = npt.NDArray[np.int64]
_NO_STATE = AccountFeedState()


def release_steps(ts: I64, wm_after: I64, wm_start: int) -> tuple[I64, I64]:
    """``(rel, steps)``: row ``i`` is released at the watermark step of row ``rel[i]``
    (``len(ts)``: not by these rows' steps); ``steps`` are the rows where the watermark
    advances.

    Row ``i`` waits for the first row ``j >= i`` where the watermark advances
    (``wm_after[j] > wm_after[j-1]``, ``wm_start`` before row 0) to a value ``>= ts[i]``;
    the rows released at one step come out by ``(ts, symbol name, arrival)``.
    """
    m = ts.shape[0]
    prev = np.empty(m, dtype=np.int64)
    prev[0] = wm_start
    prev[1:] = wm_after[:-1]
    steps = np.flatnonzero(wm_after > prev).astype(np.int64)
    if steps.size == 0:
        return np.full(m, m, dtype=np.int64), steps
    at = np.maximum(np.searchsorted(steps, np.arange(m), "left"),
                    np.searchsorted(wm_after[steps], ts, "left"))
    rel = np.where(at < steps.size, steps[np.minimum(at, steps.size - 1)], m)
    return rel.astype(np.int64), steps


@dataclass(slots=True)
class ChainStats:
    """How the batched replay drove the chain: trades applied over columns, trades sent per
    event (bar-closing rows, rows while an account was busy) and the stretches."""

    columnar: int = 0
    per_event: int = 0
    stretches: int = 0

    @property
    def columnar_share(self) -> float:
        total = self.columnar + self.per_event
        return self.columnar / total if total else 0.0


def _rows_of(tick_at: Callable[[int], Tick], arrival: npt.NDArray[np.integer[Any]],
             pre: list[Tick]) -> Callable[[int], Tick]:
    """Row ``k`` of a run: a stretch row (arrival >= 0) or a trade buffered before it."""
    def at(k: int) -> Tick:
        r = int(arrival[k])
        return tick_at(r) if r >= 0 else pre[r + len(pre)]
    return at


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a chunk's symbol table implies, computed once per table."""

    rank: I64  # code -> rank of the symbol's name (the buffer sorts by name)
    code_of: dict[str, int]
    involved: tuple[str, ...]  # every account trading one of the symbols
    trades: dict[str, npt.NDArray[np.bool_] | None]  # account -> codes it trades (None: all)
    copies: I64  # code -> account.feed copies of one trade


@dataclass(slots=True)
class AccountBypass:
    """The feed and account stages of a runner's graph, driven over columns."""

    runner: LocalRunner
    sink: TopicSink
    feed: AccountFeedRouter
    account: AccountOperator
    host: StageHost
    _plans: dict[tuple[str, ...], _Plan] = field(default_factory=dict)

    def _plan(self, symbols: tuple[str, ...], routes: tuple[tuple[str, ...], ...]) -> _Plan:
        plan = self._plans.get(symbols)
        if plan is None:
            involved = tuple(dict.fromkeys(a for accs in routes for a in accs))
            trades: dict[str, npt.NDArray[np.bool_] | None] = {}
            for a in involved:
                mask = np.array([a in accs for accs in routes], dtype=bool)
                trades[a] = None if mask.all() else mask
            plan = self._plans[symbols] = _Plan(
                rank=np.argsort(np.argsort(np.asarray(symbols, dtype=object))).astype(np.int64),
                code_of={s: k for k, s in enumerate(symbols)}, involved=involved,
                trades=trades, copies=np.array([len(r) for r in routes], dtype=np.int64))
        return plan

    @classmethod
    def of(cls, graph: Graph, runner: LocalRunner, sink: TopicSink) -> AccountBypass | None:
        """The bypass if the graph routes trades only through the feed to the account."""
        feeds = graph.consumers(tn.MD_TICKS)
        if len(feeds) != 1 or not isinstance(feeds[0].operator, AccountFeedRouter):
            return None
        if feeds[0].outputs != (tn.ACCOUNT_FEED,) or sink.needs_messages(tn.ACCOUNT_FEED):
            return None
        accounts = graph.consumers(tn.ACCOUNT_FEED)
        if len(accounts) != 1 or not isinstance(accounts[0].operator, AccountOperator) or \
                accounts[0].merge_inputs:
            return None
        return cls(runner, sink, feeds[0].operator, accounts[0].operator,
                   runner.dispatcher.by_uid[accounts[0].uid])

    def quiet_until(self, accounts: tuple[str, ...]) -> int | None:
        """Before which watermark trades alone emit nothing, or None if they might now.

        No other stage may have a timer before the end of the stream, and ``accounts`` must
        be quiet (``AccountOperator.quiet_until``; the earliest of their answers). The
        account's own timers may be pending (a filled child's expiry, a cancelled slice's
        release): with no child orders such a timer only releases the buffer, which the
        release order already does at that watermark (each release is sorted by time).
        """
        for host in self.runner.dispatcher.hosts:
            if host.merge_heap or (host is not self.host and host.heap and
                                   host.heap[0][0] != END_OF_STREAM):
                return None
        states = self.host.states
        op = self.account
        until = END_OF_STREAM
        for a in accounts:
            st = states.get(a)
            u = None if st is None else op.quiet_until(st)
            if u is None:
                return None
            until = min(until, u)
        return until

    def run(self, ts: I64, price: npt.NDArray[np.float64], size: npt.NDArray[np.float64],
            symbol: npt.NDArray[np.integer[Any]], symbols: tuple[str, ...],
            routes: tuple[tuple[str, ...], ...], wm_after: I64,
            tick_at: Callable[[int], Tick], until: int) -> int:
        """Apply these trades up to the first whose watermark reaches ``until``
        (:meth:`quiet_until` of every account in ``routes``); returns how many (0: none).

        The trades their watermark steps release go to ``AccountOperator.quiet_ticks`` with
        the buffered ones those steps release, in release order; the others are buffered
        through ``process``, as their arrival would have. ``routes[code]`` are the accounts
        trading ``symbols[code]``; the caller emits ``md.ticks``.
        """
        runner = self.runner
        m = int(np.searchsorted(wm_after, until, "left"))
        if m == 0:
            return 0
        ts, wm_after, symbol = ts[:m], wm_after[:m], symbol[:m]
        rel, steps = release_steps(ts, wm_after, runner.watermark)
        wm = int(wm_after[-1])
        plan = self._plan(symbols, routes)
        code_of = plan.code_of
        states = self.host.states
        held: dict[str, list[Tick]] = {}
        if steps.size:
            due = [a for a in plan.involved  # buffered trades these steps release
                   if any(b.ts <= wm for b in states.get(a).buffer)]
            if any(t.symbol not in code_of for a in due for b in states.get(a).buffer
                   for t in b.ticks):
                return 0  # a symbol this chunk does not name: per event
            for a in due:
                held[a] = self.account.take_released_ticks(states.get(a), wm)
        released = rel < m
        all_released = bool(released.all())
        present = np.bincount(symbol, minlength=len(symbols)) > 0
        per_account = dict.fromkeys(held)  # the accounts with trades to apply, in order
        for code, accs in enumerate(routes):
            if present[code]:
                per_account.update(dict.fromkeys(accs))
        step_wm = wm_after[steps]  # ascending: the watermark only advances at a step
        # the usual case: one symbol in order, so ``rel`` does not decrease, the released
        # rows are a prefix (the tail waits for the watermark) and release order is arrival
        # order: an account trading every symbol gets slices, no gather, no sort
        n_rel = int(np.count_nonzero(released))
        sorted_prefix = n_rel > 0 and int(np.count_nonzero(present)) == 1 and \
            bool((ts[1:] >= ts[:-1]).all())
        for a in per_account:
            mask = plan.trades[a]
            if sorted_prefix and mask is None and a not in held:
                self.account.quiet_ticks(states.get(a), QuietTicks(
                    ts=ts[:n_rel], price=price[:n_rel], size=size[:n_rel],
                    symbol=symbol[:n_rel], symbols=symbols, tick_at=tick_at))
                continue
            if mask is None:
                rows = np.arange(m) if all_released else np.flatnonzero(released)
            else:
                rows = np.flatnonzero(released & mask[symbol])
            r_ts, r_px, r_sz, r_sym, r_rel = (ts[rows], price[rows], size[rows],
                                              symbol[rows], rel[rows])
            arrival = rows
            pre = held.get(a, [])
            if pre:  # released at the first step whose watermark reaches them
                p_ts = np.array([t.ts_event for t in pre], dtype=np.int64)
                r_ts = np.concatenate((p_ts, r_ts))
                r_px = np.concatenate((np.array([t.price for t in pre]), r_px))
                r_sz = np.concatenate((np.array([t.size for t in pre]), r_sz))
                r_sym = np.concatenate((np.array([code_of[t.symbol] for t in pre],
                                                 dtype=r_sym.dtype), r_sym))
                r_rel = np.concatenate((steps[np.searchsorted(step_wm, p_ts, "left")], r_rel))
                arrival = np.concatenate((np.arange(-len(pre), 0), rows))
            if rows.size == 0 and not pre:
                continue
            order = np.lexsort((arrival, plan.rank[r_sym], r_ts, r_rel))
            self.account.quiet_ticks(states.get(a), QuietTicks(
                ts=r_ts[order], price=r_px[order], size=r_sz[order], symbol=r_sym[order],
                symbols=symbols, tick_at=_rows_of(tick_at, arrival[order], pre)))
        host = self.host
        for r in np.flatnonzero(~released).tolist():  # still waiting for the watermark
            for e in self.feed.process(_NO_STATE, tick_at(r), host)[1]:
                if host.process(e.value):
                    raise AssertionError("buffering a trade emitted output")
        self.sink.counts[tn.ACCOUNT_FEED] += int(plan.copies[symbol].sum())
        d = runner.dispatcher
        newest = int(ts.max())
        if newest > d.seen:
            d.seen = newest
        if wm > runner.watermark:
            runner.advance_watermark(wm)
        return m
