"""The decision chain's trades over columns: the account feed and the account operator's quiet
stretches, for the batched replay.

On the per-event path every trade goes through the account feed (one ``account.feed`` copy
per account trading its symbol), waits in the account's buffer until the watermark passes it
and is then applied by ``AccountOperator._on_tick``. When an account has nothing buffered, no
child orders and nothing working at the venue (``AccountOperator.quiet``), a trade emits
nothing and only moves marks, volume buckets, the session and the daily-loss flag; this
module hands such a stretch to ``AccountOperator.quiet_ticks`` as columns instead.

What it must reproduce is the order in which the buffer would release the trades: an input
waits for the first watermark *advance* at or after its arrival that reaches its event time,
and each release is sorted by ``(ts, symbol, arrival)`` (:func:`release_order`). A stretch
is cut where a trade would still be buffered at its end, so every stretch leaves the
accounts as the per-event path leaves them; the rows after it go per event until the
accounts are quiet again (``jobs.batch_replay``). The bypass is used only where the graph is
the one ``jobs.topology`` builds around it (trades reach only the feed, the feed only the
account) and nobody reads ``account.feed`` messages (it is an internal topic, only counted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from jobs.core.stage import StageHost
from jobs.graph import Graph
from jobs.local_runner import LocalRunner
from jobs.topic_sink import TopicSink
from operators.account import AccountOperator, QuietTicks
from operators.account_feed import AccountFeedRouter
from operators.contract import END_OF_STREAM
from topics import names as tn
from topics.messages import Tick

I64 = npt.NDArray[np.int64]


def release_order(ts: I64, wm_after: I64, wm_start: int, name_rank: npt.NDArray[np.int64],
                  symbol: npt.NDArray[Any]) -> tuple[int, npt.NDArray[np.intp]]:
    """``(end, order)``: rows ``[0, end)`` are all released by the watermark steps of those
    rows, in the buffer's release order ``order``.

    Row ``i`` waits for the first row ``j >= i`` where the watermark advances
    (``wm_after[j] > wm_after[j-1]``, ``wm_start`` before row 0) to a value ``>= ts[i]``;
    rows released at one step come out by ``(ts, symbol name, row)``.
    """
    m = ts.shape[0]
    prev = np.empty(m, dtype=np.int64)
    prev[0] = wm_start
    prev[1:] = wm_after[:-1]
    adv = np.flatnonzero(wm_after > prev)
    if adv.size == 0:
        return 0, np.empty(0, dtype=np.intp)
    rows = np.arange(m)
    at = np.maximum(np.searchsorted(adv, rows, "left"),
                    np.searchsorted(wm_after[adv], ts, "left"))
    rel = np.where(at < adv.size, adv[np.minimum(at, adv.size - 1)], m)
    done = np.flatnonzero(np.maximum.accumulate(rel) <= rows)
    if done.size == 0:
        return 0, np.empty(0, dtype=np.intp)
    end = int(done[-1]) + 1
    order = np.lexsort((rows[:end], name_rank[symbol[:end]], ts[:end], rel[:end]))
    return end, order


def _rows_of(tick_at: Callable[[int], Tick], rows: npt.NDArray[np.intp]
             ) -> Callable[[int], Tick]:
    return lambda k: tick_at(int(rows[k]))


@dataclass(slots=True)
class AccountBypass:
    """The feed and account stages of a runner's graph, driven over columns."""

    runner: LocalRunner
    sink: TopicSink
    feed: AccountFeedRouter
    account: AccountOperator
    host: StageHost

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

    def quiet(self, accounts: tuple[str, ...]) -> bool:
        """Whether no stage has a timer due before the end of the stream and ``accounts``
        are quiet (``AccountOperator.quiet``): trades would emit nothing."""
        for host in self.runner.dispatcher.hosts:
            if (host.heap and host.heap[0][0] != END_OF_STREAM) or host.merge_heap:
                return False
        states = self.host.states
        op = self.account
        for a in accounts:
            st = states.get(a)
            if st is None or not op.quiet(st):
                return False
        return True

    def run(self, ts: I64, price: npt.NDArray[np.float64], size: npt.NDArray[np.float64],
            symbol: npt.NDArray[np.integer[Any]], symbols: tuple[str, ...],
            routes: tuple[tuple[str, ...], ...], wm_after: I64,
            tick_at: Callable[[int], Tick]) -> int:
        """Apply the longest prefix of these trades that leaves every buffer empty; returns
        its length (0: none). ``routes[code]`` are the accounts trading ``symbols[code]``;
        the caller has checked :meth:`quiet` for all of them and emits ``md.ticks``."""
        runner = self.runner
        rank = np.argsort(np.argsort(np.asarray(symbols, dtype=object))).astype(np.int64)
        end, order = release_order(ts, wm_after, runner.watermark, rank, symbol)
        if end == 0:
            return 0
        codes = symbol[order]
        copies = np.bincount(codes, minlength=len(symbols))
        per_account: dict[str, list[int]] = {}
        for code, accs in enumerate(routes):
            if copies[code]:
                for a in accs:
                    per_account.setdefault(a, []).append(code)
        states = self.host.states
        for a, mine in per_account.items():
            rows = order if len(mine) == len(symbols) else order[np.isin(codes, mine)]
            self.account.quiet_ticks(states.get(a), QuietTicks(
                ts=ts[rows], price=price[rows], size=size[rows], symbol=symbol[rows],
                symbols=symbols, tick_at=_rows_of(tick_at, rows)))
        self.sink.counts[tn.ACCOUNT_FEED] += sum(
            int(copies[c]) * len(accs) for c, accs in enumerate(routes))
        d = runner.dispatcher
        newest = int(ts[:end].max())
        if newest > d.seen:
            d.seen = newest
        wm = int(wm_after[end - 1])
        if wm > runner.watermark:
            runner.advance_watermark(wm)
        return end
