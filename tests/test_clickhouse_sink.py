"""The ClickHouse sink on real engines: a replay of a real E-mini slice fills every table with
exactly its topic file's messages, a second replay or a re-sent batch never double-counts,
``streamquant sql`` prints them, and a server that is down loses nothing.

The replays are ``streamquant run`` in this process (default sink: the embedded chdb database
under ``<out>/clickhouse``), trading the session's slice bundle. The "server that is down" is
clickhouse-connect's real HTTP client against a loopback port where nothing listens.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from jobs.cli import main
from jobs.clickhouse.database import connect, ensure_schema
from jobs.clickhouse.run_tap import open_clickhouse_tap
from jobs.clickhouse.schema import TABLES
from jobs.clickhouse.sink import ClickHouseTap, SinkConfig, SinkNotWrittenError
from jobs.clickhouse.target import Target, embedded
from jobs.errors import UsageError
from jobs.sinks.options import SinkOptions
from tests._emini_slice import TZ_ARGS, slice_fixtures
from topics.catalog import CATALOG
from topics.serde import decode

emini_slice, slice_models = slice_fixtures()


def _lines(topics: Path, topic: str) -> list[bytes]:
    f = topics / f"{topic}.jsonl"
    return f.read_bytes().splitlines() if f.exists() else []


def _counts(target: Target, *, final: bool = True) -> dict[str, int]:
    client = connect(target, create=False)
    try:
        fin = " FINAL" if final else ""
        return {t.name: int(client.command(f"SELECT count() FROM {t.name}{fin}"))
                for t in TABLES}
    finally:
        client.close()


def _sql(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["sql", *args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory, emini_slice: Path, slice_models: Path
           ) -> Path:
    """One ``streamquant run`` of the slice with the default sink; its --out."""
    out = tmp_path_factory.mktemp("a") / "slice"
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--models", str(slice_models),
                 "--out", str(out), "--quiet", "--no-cost-gate"]) == 0
    return out


def test_a_replay_fills_every_table_with_its_topic_files_messages(replay: Path) -> None:
    topics = replay / "topics"
    counts = _counts(embedded(replay))
    expected = {t.name: len(_lines(topics, t.topic)) for t in TABLES}
    assert counts == expected
    # the run trades: the decision chain's tables are not trivially empty
    assert counts["md_ticks"] == 120_000 and counts["md_bars"] > 1000
    assert min(counts["orders"], counts["fills"], counts["risk_rejects"]) > 10
    manifest = json.loads((replay / "manifest.json").read_text())
    assert "clickhouse" in manifest["outputs"]


def test_rows_hold_the_messages_values(replay: Path) -> None:
    topics = replay / "topics"
    fills = [decode("fills", ln) for ln in _lines(topics, "fills")]
    rejects = [decode("risk.rejects", ln) for ln in _lines(topics, "risk.rejects")]
    client = connect(embedded(replay), create=False)
    try:
        rows = client.query("SELECT sq_id, fill_id, quantity, price, toUnixTimestamp64Nano("
                            "ts_event) FROM fills FINAL ORDER BY seq").result_rows
        codes = client.query("SELECT code, count() FROM risk_rejects FINAL ARRAY JOIN "
                             "reasons.code AS code GROUP BY code").result_rows
        job = client.query("SELECT DISTINCT job FROM md_bars").result_rows
    finally:
        client.close()
    assert rows == [(f"fills:{i}", f.fill_id, f.quantity, f.price, f.ts_event)  # type: ignore[attr-defined]
                    for i, f in enumerate(fills)]
    want: dict[str, int] = {}
    for r in rejects:
        for reason in r.reasons:  # type: ignore[attr-defined]
            want[reason.code] = want.get(reason.code, 0) + 1
    assert dict(codes) == want
    assert job == [(replay.name,)]


def test_the_same_replay_twice_into_one_database_counts_each_message_once(
        replay: Path, tmp_path: Path, emini_slice: Path, slice_models: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    before = _counts(embedded(replay))
    again = tmp_path / replay.name  # same job name: the run's --out name
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--models", str(slice_models),
                 "--out", str(again), "--quiet", "--no-cost-gate",
                 "--dsn", f"chdb://{replay / 'clickhouse'}"]) == 0
    assert _counts(embedded(replay)) == before
    assert (again / "topics" / "orders.jsonl").read_bytes() == \
        (replay / "topics" / "orders.jsonl").read_bytes()
    code, out, _ = _sql(capsys, "--out", str(replay), "--format", "csv",
                        "SELECT count() AS n, uniqExact(sq_id) AS ids FROM orders")
    assert code == 0
    row = next(csv.DictReader(io.StringIO(out)))
    assert int(row["n"]) == int(row["ids"]) == before["orders"]


def _fills(topics: Path) -> list[msgspec.Struct]:
    return [decode("fills", ln) for ln in _lines(topics, "fills")]


def test_a_resent_batch_after_a_recovery_is_counted_once(replay: Path, tmp_path: Path) -> None:
    fills = _fills(replay / "topics")
    target = Target(path=tmp_path / "db")
    watcher = connect(target)  # keeps the engine up; no merges, so copies stay visible
    try:
        ensure_schema(watcher, "test", embedded=True)
        watcher.command("SYSTEM STOP MERGES fills")

        def count(final: bool) -> int:
            return int(watcher.command(f"SELECT count() FROM fills{' FINAL' if final else ''}"))

        tap = ClickHouseTap(target, "live", SinkConfig(batch_rows=40), quiet=True)
        for n, f in enumerate(fills):
            tap.accept("fills", n, f)
        tap.flush(wait_s=30)
        # a restart from a checkpoint re-emits the tail with its first copies' positions
        for n in range(len(fills) // 2, len(fills)):
            tap.accept("fills", n, fills[n])
        tap.close()
        sent = tap.stats()["rows"]["fills"]
        assert sent == len(fills) + len(fills) - len(fills) // 2
        assert count(final=False) == sent  # every copy is stored ...
        assert count(final=True) == len(fills)  # ... and counted once
        # an identical re-sent batch is dropped at insert (its dedup token)
        tap = ClickHouseTap(target, "live", SinkConfig(batch_rows=40), quiet=True)
        for n, f in enumerate(fills[:40]):
            tap.accept("fills", n, f)
        tap.close()
        assert tap.stats()["rows"]["fills"] == 40
        assert count(final=False) == sent and count(final=True) == len(fills)
    finally:
        watcher.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_that_is_down_loses_nothing_and_says_so(
        replay: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    topics = replay / "topics"
    fills = _fills(topics)
    orders = [decode("orders", ln) for ln in _lines(topics, "orders")]
    down = Target(host="127.0.0.1", port=_free_port())
    spill = tmp_path / "spill"
    log = io.StringIO()
    cfg = SinkConfig(batch_rows=25, max_buffer_rows=50, retry_initial_s=0.05,
                     retry_max_s=0.2, report_every_s=0.1, close_timeout_s=0.5,
                     connect_timeout_s=0.5, spill_dir=spill)
    tap = ClickHouseTap(down, "live", cfg, log=log)  # the pipeline starts anyway
    for n, f in enumerate(fills):
        tap.accept("fills", n, f)
    for n, o in enumerate(orders):
        tap.accept("orders", n, o)
    tap.flush()  # returns: the database is failing
    rows, behind = tap.lag()  # what the metrics export as the sink's lag
    assert rows == len(fills) + len(orders) and behind > 0
    with pytest.raises(SinkNotWrittenError) as err:
        tap.close()
    stats = tap.stats()
    assert stats["failures"] >= 2 and stats["retries"] >= 1
    assert stats["rows_total"] == 0
    assert stats["unwritten_rows"] == {"fills": len(fills), "orders": len(orders)}
    assert stats["spilled_rows"] == len(fills) + len(orders)
    msg = str(err.value)
    assert f"{len(fills) + len(orders):,} rows were not written" in msg
    assert str(spill) in msg and "streamquant clickhouse load" in msg
    said = log.getvalue()
    assert "Connection refused" in said and "retry #1" in said
    # the server comes back (here: another database): nothing was lost
    db = f"chdb://{tmp_path / 'db'}"
    capsys.readouterr()
    assert main(["clickhouse", "load", str(spill), "--dsn", db]) == 0
    assert f"loaded {len(fills) + len(orders):,} rows" in capsys.readouterr().out
    counts = _counts(Target(path=tmp_path / "db"))
    assert (counts["fills"], counts["orders"]) == (len(fills), len(orders))
    assert not list(spill.glob("*.arrows"))


def test_sql_prints_tables_csv_and_json_lines(replay: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    fills = _fills(replay / "topics")
    by_side: dict[str, float] = {}
    for f in fills:
        by_side[f.side] = by_side.get(f.side, 0.0) + f.quantity  # type: ignore[attr-defined]
    query = "SELECT side, count() AS n, sum(quantity) AS qty FROM fills GROUP BY side " \
            "ORDER BY side"
    code, out, err = _sql(capsys, "--out", str(replay), query)
    assert code == 0 and err.strip() == f"({len(by_side)} rows)"
    lines = out.splitlines()
    assert lines[0].split() == ["side", "n", "qty"] and set(lines[1]) == {"-", " "}
    assert lines[2].index("BUY") == 0 and lines[2].endswith(f"{by_side['BUY']:g}")
    code, out, _ = _sql(capsys, "--out", str(replay), "--format", "csv", query)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["side"]: float(r["qty"]) for r in rows} == by_side
    code, out, _ = _sql(capsys, "--out", str(replay), "--format", "json", query)
    objs = [json.loads(ln) for ln in out.splitlines()]
    assert {o["side"]: o["qty"] for o in objs} == by_side
    assert all(isinstance(o["n"], int) for o in objs)  # 64-bit integers as numbers
    code, out, _ = _sql(capsys, "--out", str(replay), "--format", "json",
                        "SELECT * FROM pnl_daily ORDER BY day")
    days = [json.loads(ln) for ln in out.splitlines()]
    assert days and all(d["job"] == replay.name for d in days)
    last = [decode("positions", ln) for ln in _lines(replay / "topics", "positions")][-1]
    assert days[-1]["close_equity"] == pytest.approx(last.equity)  # type: ignore[attr-defined]


def test_sql_errors_are_clear_and_have_no_traceback(
        replay: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _sql(capsys, "--out", str(replay), "SELECT nope FROM fills")
    assert code == 1 and out == ""
    assert "UNKNOWN_IDENTIFIER" in err and "Traceback" not in err
    code, _, err = _sql(capsys, "--out", str(tmp_path / "nothing"), "SELECT 1")
    assert code == 2 and "no database at" in err
    assert not (tmp_path / "nothing").exists()  # looking did not create one


def test_a_database_held_by_another_process_is_named(
        replay: Path, capsys: pytest.CaptureFixture[str]) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import clickhouse_connect, sys; client = clickhouse_connect."
         "get_client(dsn=sys.argv[1]); print('open', flush=True); sys.stdin.read()",
         f"chdb://{replay / 'clickhouse'}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        code, _, err = _sql(capsys, "--out", str(replay), "SELECT 1")
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
    assert code == 2
    assert f"is open in process {holder.pid}" in err and "one process per directory" in err


def test_sink_flags_pick_the_target_or_turn_it_off(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert open_clickhouse_tap(SinkOptions(sink="none"), tmp_path, "j") is None
    assert open_clickhouse_tap(SinkOptions(), None, "j") is None  # live, no --out/--dsn
    assert "clickhouse: off (no --dsn and no --out" in capsys.readouterr().err
    with pytest.raises(UsageError, match="needs --dsn DSN or --out DIR"):
        open_clickhouse_tap(SinkOptions(sink="clickhouse"), None, "j")
    tap = open_clickhouse_tap(SinkOptions(clickhouse_ticks=False), tmp_path, "j", quiet=True)
    assert tap is not None
    try:
        assert "md.ticks" not in tap.topics and "orders" in tap.topics
        assert tap.target == Target(path=tmp_path / "clickhouse")
    finally:
        tap.close()
    assert set(CATALOG) >= tap.topics


# --------------------------------------------------------------------------- Kafka ingest
#
# chdb 4.4 (engine 26.9) refuses ``CREATE TABLE ... ENGINE = Kafka`` ("Shutdown was called",
# LOGICAL_ERROR) whether or not a broker answers, so the deploy files' Kafka tables cannot run
# here. What a server does with a record is tested instead: the materialized views of
# ``deploy/clickhouse/kafka/<table>.sql``, as written, read a stand-in table with the Kafka
# table's columns and the engine's virtual columns (``_headers.*``, ``_error`` ...), fed the
# topics' JSON lines with JSONEachRow and the Kafka table's format settings.

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "clickhouse"


def _rare_messages() -> dict[str, list[msgspec.Struct]]:
    """Messages of the topics a replay leaves empty, with their optional fields both ways."""
    from topics import messages as m

    ns = 1_378_198_560_079_000_000
    src = m.SourceRef(file="es.csv", line=7)
    tick = m.Tick(ts_event=ns, symbol="ES", venue="CME", price=1640.25, size=2.0,
                  trade_id="t1", bid=1640.0, ask=1640.5, source=src)
    return {
        "md.ticks.dlq": [
            m.DeadLetter(reason="BAD_PRICE", detail="price -1", payload="x,-1,2", source=src,
                         ts_event=ns),
            m.DeadLetter(reason="BAD_TIMESTAMP", detail="no ts", payload="?,1,1",
                         source=m.SourceRef(topic="md.ticks.raw", partition=3, offset=99))],
        "md.ticks.late": [
            m.LateTick(ts_event=ns, tick=tick, watermark=ns + 5),
            m.LateTick(ts_event=ns, tick=m.Tick(ts_event=ns - 9, symbol="NQ", venue="CME",
                                                price=15000.0, size=1.0), watermark=ns)],
        "venue.reports": [
            m.VenueReport(ts_event=ns, kind="FILL", account="paper", client_order_id="C-1",
                          symbol="ES", side="BUY", venue="CME", quantity=1.0, price=1640.5,
                          fee=1.0, fill_id="F-1"),
            m.VenueReport(ts_event=ns + 1, kind="EXPIRED", account="paper",
                          client_order_id="C-2", symbol="ES", side="SELL", venue="CME")],
        "orders.cancels": [m.OrderCancel(ts_event=ns, client_order_id="C-2", account="paper",
                                         symbol="ES", venue="CME", reason="superseded")],
        "control": [m.Control(ts_event=ns, command="KILL", account="paper", reason="desk")],
        "control.applied": [
            m.Control(ts_event=ns, command="HALT_SYMBOL", account="*", symbol="ES")],
        "models.updates": [m.ModelUpdate(ts_event=ns, model_id="bull_linear",
                                         update_type="drift", window_start=ns - 60,
                                         window_end=ns, metrics={"auc": 0.51})],
        "predictions": [m.Prediction(ts_event=ns, symbol="ES", decision_id="D-1", model="x",
                                     model_version="v", variant="A", regime="bull", score=0.1,
                                     prob_up=0.55, contributions={"rsi_14": 0.2},
                                     device="cuda")],
        "signals": [m.Signal(ts_event=ns, symbol="ES", decision_id="D-2", signal=0.0,
                             prob_up=0.5, confidence=0.1, close=1.0, bar_return=None,
                             weights={}, regime_probs={}, fallback="warmup", trace=None)],
    }


def _with_virtuals(line: bytes, topic: str, offset: int, msg_id: str) -> bytes:
    """A topic line plus the Kafka engine's virtual columns, as the stand-in table reads it."""
    extra = json.dumps({"_topic": topic, "_partition": 0, "_offset": offset,
                        "_headers.name": ["sq.schema", "sq.id"],
                        "_headers.value": ["1", msg_id], "_error": "", "_raw_message": ""})
    return line[:-1] + b"," + extra[1:].encode()


def test_the_kafka_views_ingest_every_topic_as_the_sink_writes_it(replay: Path,
                                                                  tmp_path: Path) -> None:
    from jobs.clickhouse import ddl
    from topics.serde import encode

    messages: dict[str, list[msgspec.Struct]] = {}
    for spec in TABLES:
        lines = _lines(replay / "topics", spec.topic)[:300 if spec.name == "md_ticks" else 1500]
        messages[spec.topic] = [decode(spec.topic, ln) for ln in lines]
    for topic, extra in _rare_messages().items():
        messages[topic] = messages[topic] + extra
    target = Target(path=tmp_path / "db")
    tap = ClickHouseTap(target, "sink", quiet=True)
    for topic, values in messages.items():
        for n, v in enumerate(values):
            tap.accept(topic, n, v)
    tap.close()

    values_of = {"KAFKA_BROKERS": "unused:9092", "TOPIC_PREFIX": "", "KAFKA_GROUP": "g",
                 "JOB": "kafka"}
    fmt = dict(ddl.KAFKA_FORMAT_SETTINGS)
    client = connect(target, create=False)
    try:
        for stmt in ddl.statements((DEPLOY / "kafka" / "000_errors.sql").read_text()):
            client.command(stmt)
        for spec in TABLES:
            kafka_table, *views = ddl.statements(
                (DEPLOY / "kafka" / f"{spec.name}.sql").read_text())
            client.command("EXPLAIN AST " + ddl.render(kafka_table, values_of))  # it parses
            cols = [f"{n} {t}" for n, t in [*((f"`{n}`", t) for n, t in
                                               ddl.kafka_columns(spec)), *ddl.KAFKA_VIRTUALS]]
            client.command(f"CREATE TABLE {ddl.kafka_table_name(spec)} ({', '.join(cols)}) "
                           "ENGINE = Null")
            for view in views:
                client.command(ddl.render(view, values_of))
            rows = []
            for n, v in enumerate(messages[spec.topic]):
                msg_id = (f"{spec.topic}:{v.source.describe()}"  # type: ignore[attr-defined]
                          if spec.id_from_source else f"{spec.topic}:{n}")
                rows.append(_with_virtuals(encode(v), spec.topic, n, msg_id))
            if rows:
                client.raw_insert(ddl.kafka_table_name(spec), insert_block=b"\n".join(rows),
                                  fmt="JSONEachRow", settings=fmt)
        # an unreadable record is kept with its error, not ingested
        client.raw_insert("kafka_orders", fmt="JSONEachRow", insert_block=json.dumps(
            {"_topic": "orders", "_partition": 1, "_offset": 77, "_error": "Cannot parse",
             "_raw_message": "{oops"}).encode())
        errors = client.query("SELECT job, topic, `offset`, raw_message FROM kafka_errors"
                              ).result_rows
        compared = 0
        for spec in TABLES:
            cols = ", ".join(f"`{c.name}`" for c in spec.columns
                             if c.name not in ("job", "ingested_at", "seq"))
            q = f"SELECT {cols} FROM {spec.name} FINAL WHERE job = '{{}}' ORDER BY sq_id"
            via_sink = client.query(q.format("sink")).result_rows
            via_kafka = client.query(q.format("kafka")).result_rows
            assert via_kafka == via_sink, spec.name
            assert len(via_sink) == len(messages[spec.topic])
            compared += bool(via_sink)
    finally:
        client.close()
    assert compared == len(TABLES)  # every table had rows both ways
    assert errors == [("kafka", "orders", 77, "{oops")]
