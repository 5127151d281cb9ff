"""Whether and where a run writes ClickHouse (``run --sink/--dsn/--no-clickhouse-ticks``).

- ``--sink none``: off. ``--sink clickhouse``: on, a usage error if the extra is missing;
  ``--sink auto`` (the default): on when the extra imports, else off with one line on stderr.
- ``--dsn`` names the target; without it, the embedded database ``<out>/clickhouse`` of a
  replay (or of a live run given ``--out``). A live run without either has no database to
  write: off, said on stderr (an error with ``--sink clickhouse``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.clickhouse.database import missing_extra
from jobs.clickhouse.target import resolve
from jobs.errors import UsageError
from jobs.sinks.options import SinkOptions

if TYPE_CHECKING:
    from jobs.clickhouse.sink import ClickHouseTap


EMBEDDED_BATCH_S = 60.0
SERVER_BATCH_S = 1.0


def open_clickhouse_tap(opts: SinkOptions, out: Path | None, job: str, *, quiet: bool = False
                        ) -> ClickHouseTap | None:
    """The run's ClickHouse tap, or None when the run writes no ClickHouse tables."""
    if opts.sink == "none":
        return None
    required = opts.sink == "clickhouse"
    target = resolve(opts.dsn, out)
    if target is None:
        if required:
            raise UsageError("--sink clickhouse needs --dsn DSN or --out DIR (the embedded "
                             "database goes under <out>/clickhouse)")
        print("clickhouse: off (no --dsn and no --out to hold an embedded database)",
              file=sys.stderr)
        return None
    missing = missing_extra(target.embedded)
    if missing is not None:
        if required:
            raise UsageError(f"--sink clickhouse: {missing}")
        print(f"clickhouse: off ({missing}; --sink none hides this)", file=sys.stderr)
        return None
    from jobs.clickhouse.sink import ClickHouseTap, SinkConfig, spill_default

    # nobody can read an embedded database while the run holds it: batch by size only (time
    # batches would be many small inserts on the pipeline's cores)
    cfg = SinkConfig(ticks=opts.clickhouse_ticks, spill_dir=spill_default(out),
                     batch_seconds=EMBEDDED_BATCH_S if target.embedded else SERVER_BATCH_S)
    return ClickHouseTap(target, job, cfg, quiet=quiet)
