"""``faust -A jobs.faust.worker:app worker``: the same worker through Faust's own CLI.

Faust's CLI imports a module-level app, so the run's settings come from the environment:
``STREAMQUANT_BOOTSTRAP``, ``STREAMQUANT_MODELS``, ``STREAMQUANT_CHECKPOINT_DIR`` (required),
and ``STREAMQUANT_RUN_ARGS``, any further ``streamquant run`` flags (``--topic-prefix dev.
--until-end --no-cost-gate ...``), parsed by the same parser as ``streamquant run --engine
faust``, so both ways build the same graph and the same worker. Faust's ``--web-port`` and
``-l`` flags apply as usual. The checkpoint is loaded and the operators are opened when this
module is imported (the worker process), and closed at exit.
"""

from __future__ import annotations

import atexit
import os
import shlex
from contextlib import ExitStack

from jobs.cli import build_parser
from jobs.errors import UsageError
from jobs.faust.app import build_app
from jobs.faust.run import build_pipeline, config_from_args
from jobs.options import ReplayOptions
from jobs.topology import opened

ENV = ("STREAMQUANT_BOOTSTRAP", "STREAMQUANT_MODELS", "STREAMQUANT_CHECKPOINT_DIR")


def _argv() -> list[str]:
    missing = [v for v in ENV if not os.environ.get(v)]
    if missing:
        raise UsageError(f"faust -A jobs.faust.worker:app needs {', '.join(missing)} in the "
                         "environment (docs/faust.md)")
    return ["run", "--engine", "faust", "--bootstrap", os.environ["STREAMQUANT_BOOTSTRAP"],
            "--models", os.environ["STREAMQUANT_MODELS"],
            "--checkpoint-dir", os.environ["STREAMQUANT_CHECKPOINT_DIR"],
            *shlex.split(os.environ.get("STREAMQUANT_RUN_ARGS", ""))]


_args = build_parser().parse_args(_argv())
_args.out_given = False
_args.out = _args.out or "out/run"  # what _cmd_run sets (the Faust engine writes no --out)
config = config_from_args(_args)
_replay = ReplayOptions.from_args(_args)
pipeline = build_pipeline(config, _replay, quiet=_replay.quiet)
pipeline.resume()
_stages = ExitStack()
_stages.enter_context(opened(pipeline.graph.stages))
atexit.register(_stages.close)
app, driver = build_app(config, pipeline)
