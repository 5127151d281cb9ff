"""``streamquant explain ID``: the flags and the handler (the work is in ``jobs.explain``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs.errors import UsageError


def add_explain(sub: Any) -> None:
    from jobs.clickhouse.commands import DEFAULT_OUT, target_args

    p = sub.add_parser(
        "explain", help="why a decision was made: its full record, input to fills",
        description="Print one decision's record from the analysts' database: input lines "
        "and ticks, the bar, features, each specialist's version and output, regime "
        "probabilities and weights, per-feature contributions, sizing inputs, every pre-trade "
        "check (and why an order was cut), the orders and their fills. ID is a decision id "
        "(audit_decisions.decision_id) or the id of one of its orders or fills. Reads the "
        f"database a 'run' wrote (its --out, default {DEFAULT_OUT}) or any --dsn.",
        epilog="example: streamquant explain C-8cfaa599af5537f6a44f --out out/emini")
    p.add_argument("id", metavar="ID", help="decision id, client/parent order id, or fill id")
    target_args(p)
    p.add_argument("--job", help="the job to read when several share the database")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text: a readable report; json: the record, times in ns "
                        "(default: %(default)s)")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    import msgspec

    from jobs.clickhouse.commands import target_of
    from jobs.clickhouse.database import connect, missing_extra
    from jobs.explain import ExplainError, explain
    from jobs.explain_report import render

    target = target_of(args)
    missing = missing_extra(target.embedded)
    if missing is not None:
        raise UsageError(missing)
    client = connect(target, create=False)
    try:
        records = explain(client, args.id.strip(), job=args.job)
    except ExplainError as exc:
        print(f"streamquant: explain: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if args.format == "json":
        enc = msgspec.json.Encoder()
        for rec in records:
            sys.stdout.write(enc.encode(rec).decode() + "\n")
        return 0
    sys.stdout.write("\n".join(render(r) for r in records))
    return 0
