"""``streamquant flink submit``: the Flink job on a running cluster, through Flink's own CLI.

The Flink CLI of the apache-flink wheel (``pyflink/bin/flink``, not on PATH) submits
``-pym jobs.flink.main`` with this project shipped by ``-pyfs``; the job's driver runs here,
collects the outputs from the cluster and writes ``<out>/topics`` as the local run does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from jobs.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]


def flink_home() -> Path:
    """The Flink distribution inside the installed apache-flink wheel."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def submit_command(jobmanager: str, run_args: list[str], *, detached: bool = False,
                   savepoint: str | None = None) -> list[str]:
    """The ``flink run`` command line for ``streamquant run --engine flink RUN_ARGS``."""
    if ":" not in jobmanager:
        raise UsageError(f"--jobmanager must be HOST:PORT (the REST endpoint), got "
                         f"{jobmanager!r}")
    cmd = [str(flink_home() / "bin" / "flink"), "run", "-m", jobmanager]
    if detached:
        cmd.append("-d")
    if savepoint is not None:
        cmd += ["-s", savepoint]
    return [*cmd, "-pyclientexec", sys.executable, "-pyexec", sys.executable,
            "-pym", "jobs.flink.main", "-pyfs", str(ROOT), *run_args]


def submit_env() -> dict[str, str]:
    """The venv's ``bin`` first on PATH (thread mode), this project importable."""
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}


def add_flink_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fl = sub.add_parser("flink", help="the Flink engine on a cluster (docs/flink.md)")
    fsub = fl.add_subparsers(dest="flink_cmd", required=True, metavar="SUBCOMMAND")
    s = fsub.add_parser(
        "submit", help="submit the pipeline to a running Flink cluster",
        description="Run `streamquant run --engine flink RUN_ARGS` as a job on the cluster "
        "whose REST endpoint is --jobmanager (Flink's CLI from the apache-flink wheel); the "
        "outputs are collected here into --out's topics.")
    s.add_argument("--jobmanager", required=True, metavar="HOST:PORT")
    s.add_argument("--savepoint", metavar="PATH",
                   help="resume from this savepoint (taken by `flink stop --savepointPath`)")
    s.add_argument("run_args", nargs=argparse.REMAINDER,
                   help="after `--`: the arguments of `streamquant run` (--ticks, --models, "
                        "--out, ...)")
    s.set_defaults(func=main_submit)


def main_submit(args: argparse.Namespace) -> int:
    run_args = [a for a in args.run_args if a != "--"] if args.run_args[:1] == ["--"] \
        else list(args.run_args)
    cmd = submit_command(args.jobmanager, run_args, savepoint=args.savepoint)
    return subprocess.run(cmd, env=submit_env(), check=False).returncode
