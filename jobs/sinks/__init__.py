"""Where the graph's messages go besides their topics: analysts' tables, the latest-state
cache, metrics. Each is a ``Tap`` on the output (``jobs.sinks.tap``)."""
