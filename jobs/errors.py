"""Errors the CLI maps to exit codes."""


class UsageError(ValueError):
    """The user asked for something impossible (bad flag, missing file, wrong columns): exit 2."""
