"""The columnar replay accelerator: normalize, window features and the account's quiet trades
over numpy columns.

Why it lives here, apart from the operators: it works across every key of a file at once
(one ``validate`` call dedupes all symbols, one fold closes every symbol's bars), which no
keyed runtime (Flink, Faust, the local runner) can host. It is an execution strategy of the
file replay job (``jobs.batch_replay``), not a pipeline stage: operators never import it, and
it calls their per-key logic (``Normalize.check``, ``operators.domain.dedupe.admit``,
``operators.domain.tick_fields``, ``operators.features.close_bar``) wherever one row or one
bar at a time is needed. Its outputs are tested byte-equal to the per-event reference path.

- ``normalize_columns``: ``RawTickColumns`` (parsed cells, sentinels for bad ones) →
  valid-row mask, dead letters and dedupe states;
- ``tick_columns``: ``TickColumns`` (valid ticks as columns) and their watermarks;
- ``bar_fold``: ticks → per-(symbol, bar) aggregates, bit-equal to ``OpenBar.add``;
- ``features_columns``: bars closed by the watermark and their feature vectors;
- ``account_columns``: the account feed and the account operator's stretches of trades that
  only move marks (``AccountOperator.quiet_ticks``), in the order the account's event-time
  buffer releases them.
"""
