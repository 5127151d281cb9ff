"""The runtime-neutral core every host calls: the semantics of time, state and dispatch.

A host (the local runner today; a Kafka live path, PyFlink ``KeyedProcessFunction`` wrappers
and Faust agents later) decides where records come from and where outputs go; the core decides
what happens in between, so every host gives the same bytes:

- ``timers``: the timer service, ``(ts, key)`` order, duplicates fire once;
- ``watermarks``: per-partition punctuated watermarks, their minimum, heartbeats, end of stream;
- ``merge``: event-time ordering across the inputs of a multi-input stage;
- ``stage``: one operator's host: keyed state store, timers, watermark, the ``Context``;
- ``dispatch``: a whole graph in one process: depth-first dispatch, watermark steps in
  topological order, per-step batching by topic, keyed batches;
- ``checkpoint``: the versioned checkpoint (envelopes, raw key states, timers, watermarks,
  source offsets, output positions) and its atomic file write.

See ``docs/time.md`` for the rules and ``docs/architecture.md`` for how hosts use them.
"""
