"""Entry point for ``flink run -pym jobs.flink.main`` and the FlinkDeployment manifests.

The arguments are ``streamquant run``'s; the engine is Flink. Submitted by the Flink CLI, the
environment the job builds is the cluster's (the client's context), not a local MiniCluster.
"""

from __future__ import annotations

import sys

from jobs.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "--engine", "flink", *sys.argv[1:]]))
