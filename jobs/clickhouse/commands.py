"""``streamquant sql`` and ``streamquant clickhouse init|ddl|load``: the handlers and flags.

``--out DIR`` means the embedded database of a run (``DIR/clickhouse``), like ``run --out``
and with the same default (``out/run``); ``--dsn`` names any database (a server, or a chdb
directory).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from jobs.clickhouse import ddl
from jobs.clickhouse.target import DSN_FORMS, Target, embedded, parse_dsn
from jobs.errors import UsageError

DEFAULT_OUT = "out/run"
"""The same default as ``run --out``."""


def target_args(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    default = "" if required else f" (default: {DEFAULT_OUT}, as 'run')"
    g.add_argument("--out", metavar="DIR", default=None,
                   help=f"a run's output directory: its embedded database DIR/clickhouse"
                        f"{default}")
    g.add_argument("--dsn", metavar="DSN", help=f"any database: {DSN_FORMS}")


def target_of(args: argparse.Namespace) -> Target:
    if args.dsn is not None:
        return parse_dsn(args.dsn)
    return embedded(Path(args.out or DEFAULT_OUT))


def _need_extra(target: Target) -> None:
    from jobs.clickhouse.database import missing_extra

    missing = missing_extra(target.embedded)
    if missing is not None:
        raise UsageError(missing)


# ----------------------------------------------------------------------------- sql


def cmd_sql(args: argparse.Namespace) -> int:
    from jobs.clickhouse.database import connect
    from jobs.clickhouse.query import QueryError, run_query, write_result

    target = target_of(args)
    _need_extra(target)
    if not args.query.strip():
        raise UsageError("no query given")
    client = connect(target, create=False)
    try:
        data = run_query(client, args.query, args.format, final=not args.no_final)
    except QueryError as exc:
        print(f"streamquant: sql: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    try:
        rows = write_result(data, args.format, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        return 0
    if args.format == "table":
        print(f"({rows} row{'s' if rows != 1 else ''})", file=sys.stderr)
    return 0


def add_sql(sub: Any) -> None:
    p = sub.add_parser(
        "sql", help="query the analysts' ClickHouse database",
        description="Run one query against the database a 'run' wrote (its --out, default "
        f"{DEFAULT_OUT}) or any --dsn. Tables are named after the topics ('.' becomes '_': "
        "orders, fills, md_bars, audit_decisions, ...) plus the pnl_daily view; "
        "docs/clickhouse.md lists them. Queries read each message once (FINAL) unless "
        "--no-final. The embedded database is readable when no run holds it.",
        epilog="example: streamquant sql \"SELECT code, count() FROM risk_rejects ARRAY JOIN "
               "reasons.code AS code GROUP BY code\"")
    p.add_argument("query", metavar="SQL", help="one ClickHouse SQL statement")
    target_args(p)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table: aligned columns (long cells cut); csv: with a header row; "
                        "json: one object per line (default: %(default)s)")
    p.add_argument("--no-final", action="store_true",
                   help="read tables as stored: a re-sent message may show twice until "
                        "ClickHouse merges it away (faster on huge tables)")
    p.set_defaults(func=cmd_sql)


# ----------------------------------------------------------------------------- clickhouse


def _ttl_arg(value: str | None) -> int | str | None:
    from jobs.clickhouse.database import TTL_KEEP

    if value is None:
        return TTL_KEEP
    if value in ("off", "none"):
        return None
    v = value.removesuffix("d")
    if not v.isdigit() or int(v) <= 0:
        raise UsageError(f"--ticks-ttl {value!r}: a number of days (e.g. 30 or 30d) or 'off'")
    return int(v)


def cmd_init(args: argparse.Namespace) -> int:
    from jobs.clickhouse.database import connect, ensure_schema
    from jobs.manifest import code_version

    target = target_of(args)
    _need_extra(target)
    ttl = _ttl_arg(args.ticks_ttl)
    kafka = _kafka_values(args, target)
    client = connect(target)
    try:
        report = ensure_schema(client, target.describe(), embedded=target.embedded,
                               ticks_ttl_days=ttl, tool=f"streamquant {code_version()}")
        created_kafka = _apply_kafka(client, kafka, args) if kafka is not None else []
    finally:
        client.close()
    print(f"{target.describe()}: streamquant schema {report.version} (fingerprint "
          f"{report.fingerprint})")
    if report.created:
        print(f"  created  {', '.join(report.created)}")
    if report.present:
        print(f"  present  {', '.join(report.present)} (unchanged)")
    print(f"  md_ticks retention: {report.ticks_ttl}")
    if kafka is not None:
        print(f"  Kafka ingest from {kafka['KAFKA_BROKERS']} (topics "
              f"'{kafka['TOPIC_PREFIX']}<topic>', job {kafka['JOB']!r}): "
              f"{len(created_kafka)} topics")
    return 0


def _kafka_values(args: argparse.Namespace, target: Target) -> dict[str, str] | None:
    if args.kafka is None:
        for flag, v in (("--topic-prefix", args.topic_prefix), ("--kafka-group",
                        args.kafka_group), ("--job-id", args.job_id)):
            if v is not None:
                raise UsageError(f"{flag} goes with --kafka BROKERS")
        return None
    if target.embedded:
        raise UsageError("--kafka: Kafka-engine tables need a ClickHouse server (--dsn "
                         "clickhouse://...); the embedded engine (chdb) cannot create them")
    vals = dict(ddl.KAFKA_DEFAULTS)
    vals["KAFKA_BROKERS"] = args.kafka
    for key, v in (("TOPIC_PREFIX", args.topic_prefix), ("KAFKA_GROUP", args.kafka_group),
                   ("JOB", args.job_id)):
        if v is not None:
            vals[key] = v
    return vals


def _apply_kafka(client: Any, values: dict[str, str], args: argparse.Namespace) -> list[str]:
    from jobs.clickhouse.schema import TABLES

    client.command(ddl.KAFKA_ERRORS)
    done = []
    for spec in TABLES:
        if spec.name == "md_ticks" and args.no_kafka_ticks:
            continue
        for stmt in ddl.kafka_statements(spec):
            client.command(ddl.render(stmt, values))
        done.append(spec.topic)
    return done


def cmd_ddl(args: argparse.Namespace) -> int:
    if args.check is not None:
        stale = ddl.stale_deploy(Path(args.check))
        if stale:
            print(f"{args.check}: out of date: {', '.join(stale)} (regenerate with "
                  f"'streamquant clickhouse ddl --write {args.check}')", file=sys.stderr)
            return 1
        print(f"{args.check}: up to date (schema {ddl.SCHEMA_VERSION}, fingerprint "
              f"{ddl.fingerprint()})")
        return 0
    if args.write is not None:
        written = ddl.write_deploy(Path(args.write))
        print(f"{len(written)} files written to {args.write}" if written
              else f"{args.write}: already up to date", file=sys.stderr)
        return 0
    files = ddl.deploy_files()
    for rel in ("001_tables.sql", "002_views.sql"):
        sys.stdout.write(files[rel] + "\n")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from jobs.clickhouse.database import connect, ensure_schema
    from jobs.clickhouse.spill import read_spilled, spilled_files, spilled_meta

    target = target_of(args)
    _need_extra(target)
    directory = Path(args.spill_dir)
    files = spilled_files(directory) if directory.is_dir() else []
    if not files:
        raise UsageError(f"{directory}: no spilled batches (*.arrows) there")
    client = connect(target)
    rows: dict[str, int] = {}
    try:
        ensure_schema(client, target.describe(), embedded=target.embedded)
        for path in files:
            data = read_spilled(path)
            table, token = spilled_meta(data)
            client.insert_arrow(table, data, settings={"insert_deduplication_token": token,
                                                       "optimize_on_insert": 0})
            rows[table] = rows.get(table, 0) + int(data.num_rows)
            path.unlink()
    finally:
        client.close()
    print(f"loaded {sum(rows.values()):,} rows into {target.describe()} ("
          f"{', '.join(f'{t} {n:,}' for t, n in sorted(rows.items()))}) from {len(files)} "
          "files (removed)")
    return 0


def add_clickhouse(sub: Any) -> None:
    ch = sub.add_parser("clickhouse", help="the analysts' ClickHouse database: schema, DDL",
                        description="See docs/clickhouse.md.")
    csub = ch.add_subparsers(dest="clickhouse_cmd", required=True, metavar="SUBCOMMAND")
    init = csub.add_parser(
        "init", help="create the tables and views (idempotent)",
        description="Create the database, its tables (one per topic) and views, or check "
        "that an existing one has this code's schema (a different one is reported, never "
        "mixed). Safe to run again. With --kafka (a server only) also the Kafka-engine tables "
        "and materialized views that ingest the topics by themselves. A run creates its "
        "embedded database itself.")
    target_args(init, required=True)
    init.add_argument("--ticks-ttl", metavar="DAYS", default=None,
                      help="retention of md_ticks rows after they were written, in days, or "
                           f"'off' (default: as the table has it; new tables: "
                           f"{ddl.TICKS_TTL_DAYS} days on a server, off in an embedded "
                           "database)")
    k = init.add_argument_group("Kafka ingest (server only)")
    k.add_argument("--kafka", metavar="BROKERS", default=None,
                   help="bootstrap servers ClickHouse reads the topics from")
    k.add_argument("--topic-prefix", default=None, metavar="PREFIX",
                   help="prefix of the topic names on the cluster (as the live run's)")
    k.add_argument("--kafka-group", default=None, metavar="GROUP",
                   help=f"consumer group prefix (default: {ddl.KAFKA_DEFAULTS['KAFKA_GROUP']})")
    k.add_argument("--job-id", default=None, metavar="ID",
                   help="the job column of ingested rows: the live run's --job-id "
                        f"(default: {ddl.KAFKA_DEFAULTS['JOB']})")
    k.add_argument("--no-kafka-ticks", action="store_true",
                   help="do not ingest md.ticks (the largest topic)")
    init.set_defaults(func=cmd_init)

    d = csub.add_parser("ddl", help="print or write the generated DDL (deploy/clickhouse)",
                        description="The DDL generated from the message types: printed "
                        "(tables and views), written to a directory (--write), or compared "
                        "with one (--check, exit 1 if different).")
    dg = d.add_mutually_exclusive_group()
    dg.add_argument("--write", metavar="DIR", help="write every file (e.g. deploy/clickhouse)")
    dg.add_argument("--check", metavar="DIR", help="exit 1 unless DIR has the generated files")
    d.set_defaults(func=cmd_ddl)

    ld = csub.add_parser("load", help="insert batches a sink spilled while the database was "
                                      "down",
                         description="Insert the Arrow files a run's sink left in its spill "
                         "directory (<out>/clickhouse-spill), in order, and remove them. A "
                         "batch inserted twice is dropped by the server (its dedup token).")
    ld.add_argument("spill_dir", metavar="SPILL_DIR")
    target_args(ld, required=True)
    ld.set_defaults(func=cmd_load)
