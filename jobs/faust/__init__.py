"""The graph as a faust-streaming worker (``run --engine faust``; docs/faust.md).

``app`` builds the Faust app (agents, timer, web pages), ``pipeline`` is the Faust-free
adapter onto the live path's runtime core, ``run`` the CLI entry point and ``worker`` the
module-level app for ``faust -A jobs.faust.worker:app worker``.
"""
