"""The analysts' tables: derived from the message types, deployed as generated, applied
idempotently by ``clickhouse init``, and a changed schema is reported instead of mixed.

Real chdb (ClickHouse's engine in-process) through clickhouse-connect, in temporary
directories; one directory per test, each client closed before the next opens.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from jobs.cli import main
from jobs.clickhouse import ddl
from jobs.clickhouse.database import connect
from jobs.clickhouse.schema import TABLES, message_columns, table_name
from jobs.clickhouse.target import Target, parse_dsn
from jobs.errors import UsageError
from jobs.manifest import RunPaths, RunRecord, prepare_out
from topics.catalog import CATALOG
from topics.messages import SourceRef

ROOT = Path(__file__).resolve().parents[1]


def test_deploy_directory_holds_exactly_the_generated_ddl() -> None:
    stale = ddl.stale_deploy(ROOT / "deploy" / "clickhouse")
    assert stale == [], (f"deploy/clickhouse differs from the generated DDL in {stale}: run "
                         "'streamquant clickhouse ddl --write deploy/clickhouse'")


def test_every_public_topic_has_a_table_named_after_it() -> None:
    public = {t for t, s in CATALOG.items() if not s.internal} - {"md.ticks.raw"}
    assert {t.topic for t in TABLES} == public
    assert {t.name for t in TABLES} >= {
        "md_ticks", "md_bars", "features", "predictions", "regimes", "audit_decisions",
        "orders", "fills", "risk_rejects", "positions", "md_ticks_dlq", "md_ticks_late",
        "signals", "orders_intents", "orders_cancels", "venue_reports", "control_applied",
        "models_updates"}
    for spec in TABLES:
        assert spec.name == table_name(spec.topic) == spec.topic.replace(".", "_")
        assert spec.order_by[0] == "job" and spec.order_by[-1] == "sq_id"
        assert "ENGINE = ReplacingMergeTree" in ddl.table_ddl(spec)


class _Probe(msgspec.Struct, frozen=True, kw_only=True):
    ts_event: int
    window_end: int | None = None
    qty: float
    note: str | None = None
    fill_id: str
    side: str
    done: bool
    weights: dict[str, float]
    feats: dict[str, float | None]
    ids: tuple[str, ...]
    refs: tuple[SourceRef, ...]
    source: SourceRef | None = None
    nested: dict[str, str] = {}


def test_columns_follow_the_message_type() -> None:
    cols = {c.name: c.type for c in message_columns(_Probe)}
    assert cols == {
        "ts_event": "DateTime64(9, 'UTC')",
        "window_end": "Nullable(DateTime64(9, 'UTC'))",
        "qty": "Float64",
        "note": "LowCardinality(Nullable(String))",
        "fill_id": "String",  # an id: not LowCardinality
        "side": "LowCardinality(String)",
        "done": "Bool",
        "weights": "Map(LowCardinality(String), Float64)",
        "feats": "Map(LowCardinality(String), Nullable(Float64))",
        "ids": "Array(String)",
        "refs": "Array(Tuple(file LowCardinality(Nullable(String)), line Nullable(Int64), "
                "topic LowCardinality(Nullable(String)), `partition` Nullable(Int64), "
                "`offset` Nullable(Int64)))",
        "source_file": "LowCardinality(Nullable(String))",
        "source_line": "Nullable(Int64)",
        "source_topic": "LowCardinality(Nullable(String))",
        "source_partition": "Nullable(Int64)",
        "source_offset": "Nullable(Int64)",
        "nested": "Map(LowCardinality(String), String)",
    }


def test_a_new_message_field_changes_the_generated_ddl() -> None:
    class Wider(_Probe, frozen=True, kw_only=True):
        extra: float | None = None

    assert "extra" in {c.name for c in message_columns(Wider)}
    assert "extra" not in {c.name for c in message_columns(_Probe)}


@pytest.mark.parametrize(("dsn", "problem"), [
    ("chdb://", "needs a directory"),
    ("mysql://h:1/db", "expected chdb://DIR or clickhouse://"),
    ("clickhouse://host", "no port"),
    ("clickhouse://host:99999", "port"),
    ("clickhouse://host:abc", "port"),
    ("clickhouse://:8123", "no host"),
    ("clickhouse://h:8123/a/b", "one database name"),
    ("clickhouse://h:8123/db?x=1", "no ?options"),
    ("clickhouse://h:8123/bad-name", "database name"),
])
def test_bad_dsns_are_usage_errors_that_say_what_is_wrong(dsn: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem.replace("?", r"\?")):
        parse_dsn(dsn)


def test_dsns_parse_into_targets_and_never_print_the_password() -> None:
    t = parse_dsn("clickhouse://ana:s%40cret@db.example:8123/desk")
    assert (t.host, t.port, t.user, t.password, t.database, t.secure) == (
        "db.example", 8123, "ana", "s@cret", "desk", False)
    assert "s@cret" not in t.describe() and t.describe() == \
        "clickhouse://ana:***@db.example:8123/desk"
    assert parse_dsn("clickhouses://h:8443").secure
    assert parse_dsn("clickhouse://h:8123").database == ddl.DATABASE
    assert parse_dsn("chdb://out/run/clickhouse") == Target(path=Path("out/run/clickhouse"))


def _tables(dsn: str) -> dict[str, str]:
    client = connect(parse_dsn(dsn), create=False)
    try:
        rows = client.query("SELECT name, engine FROM system.tables WHERE database = "
                            "currentDatabase()").result_rows
    finally:
        client.close()
    return {str(n): str(e) for n, e in rows}


def test_clickhouse_init_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    dsn = f"chdb://{tmp_path / 'db'}"
    assert main(["clickhouse", "init", "--dsn", dsn]) == 0
    first = capsys.readouterr().out
    assert "created" in first and "md_ticks retention: none" in first
    tables = _tables(dsn)
    assert {t.name for t in TABLES} | {"pnl_daily", ddl.SCHEMA_TABLE} == set(tables)
    assert tables["orders"] == "ReplacingMergeTree" and tables["pnl_daily"] == "View"
    assert main(["clickhouse", "init", "--dsn", dsn]) == 0
    second = capsys.readouterr().out
    assert "created" not in second and "(unchanged)" in second
    assert _tables(dsn) == tables
    assert main(["clickhouse", "init", "--dsn", dsn, "--ticks-ttl", "7"]) == 0
    assert "md_ticks retention: 7 days" in capsys.readouterr().out


def test_a_database_of_another_schema_is_reported_not_mixed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"chdb://{tmp_path / 'db'}"
    assert main(["clickhouse", "init", "--dsn", dsn]) == 0
    client = connect(parse_dsn(dsn))
    try:
        client.command("ALTER TABLE fills ADD COLUMN broker String")
        client.command("ALTER TABLE orders MODIFY COLUMN quantity Float32")
    finally:
        client.close()
    capsys.readouterr()
    assert main(["clickhouse", "init", "--dsn", dsn]) == 2
    err = capsys.readouterr().err
    assert "holds another streamquant schema" in err
    assert "fills: extra column broker String" in err
    assert "orders: column quantity is Float32, this code writes Float64" in err


def test_kafka_ingest_needs_a_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    assert main(["clickhouse", "init", "--dsn", f"chdb://{tmp_path}", "--kafka",
                 "127.0.0.1:9092"]) == 2
    assert "need a ClickHouse server" in capsys.readouterr().err


def test_replacing_a_run_removes_its_database(tmp_path: Path) -> None:
    out = tmp_path / "run"
    paths = RunPaths(out=out, inputs=())
    prepare_out(paths, force=False)
    record = RunRecord(paths, {})
    record.close("complete")
    (out / "clickhouse" / "store").mkdir(parents=True)
    (out / "clickhouse-spill").mkdir()
    (out / "notes.txt").write_text("mine")
    removed = prepare_out(paths, force=True)
    assert out / "clickhouse" in removed and out / "clickhouse-spill" in removed
    assert not (out / "clickhouse").exists() and (out / "notes.txt").exists()


def test_a_new_embedded_database_is_the_same_with_or_without_the_cached_template(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.clickhouse.sink import ClickHouseTap

    def schema_of(db: Path) -> list[tuple[str, str, str]]:
        client = connect(Target(path=db), create=False)
        try:
            rows = client.query("SELECT table, name, type FROM system.columns WHERE database "
                                "= currentDatabase() ORDER BY table, position").result_rows
        finally:
            client.close()
        return [(str(a), str(b), str(c)) for a, b, c in rows]

    monkeypatch.setenv("STREAMQUANT_CACHE", str(tmp_path / "cache"))
    ClickHouseTap(Target(path=tmp_path / "a"), "j", quiet=True).close()  # builds the template
    ClickHouseTap(Target(path=tmp_path / "b"), "j", quiet=True).close()  # copies it
    (tmp_path / "blocked").write_text("a file where the cache directory would go")
    monkeypatch.setenv("STREAMQUANT_CACHE", str(tmp_path / "blocked"))
    ClickHouseTap(Target(path=tmp_path / "c"), "j", quiet=True).close()  # creates in place
    assert list((tmp_path / "cache" / "clickhouse-template").iterdir())
    a, b, c = (schema_of(tmp_path / x) for x in "abc")
    assert a == b == c and len({t for t, _, _ in a}) == len(TABLES) + 2
