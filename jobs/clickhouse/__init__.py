"""The analysts' ClickHouse database: tables derived from the topics' message types, the sink
that fills them (``sink``), the DDL in ``deploy/clickhouse/`` (``ddl``), and ``streamquant sql``
(``query``). See docs/clickhouse.md.

Only ``schema``, ``ddl`` and ``target`` import without the ``clickhouse`` extra; the rest needs
clickhouse-connect (and chdb for the embedded database, pyarrow for inserts).
"""
