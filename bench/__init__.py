"""Benchmarks that print figures (never timed assertions): ``python -m bench`` runs them all.

Each module runs alone as ``python -m bench.<name>`` and can write its figures as JSON rows
(``--json PATH``) for the combined table. The machine is shared (2 cores), so every figure is
a median over repetitions with its spread, and comparisons are ratios taken within one run.
"""
