"""Prometheus metrics of a run (``--metrics-port``): a tap plus a scrape-time collector.

Nothing here runs per tick. Counts come from what the output already counts (messages per
topic, dead letters per reason) and from the few low-rate topics the tap accepts (bars,
predictions, orders, fills...); operator latencies are timed on samples (``sampler``); the
runtime's own figures and the account state are read when Prometheus scrapes (``collector``).
``catalog`` names every metric once; docs/observability.md describes them.
"""
