"""Errors the CLI maps to exit codes."""

import signal


class UsageError(ValueError):
    """The user asked for something impossible (bad flag, missing file, wrong columns): exit 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (SIGINT): the run stops and records ``interrupted``."""

    signum = signal.SIGTERM

    def __str__(self) -> str:
        return "SIGTERM"
