"""PyFlink UDFs/UDAFs over the same operator code (indicators, regime posterior, risk checks).

Empty until the PyFlink issue: the engine-neutral logic lives in ``operators/`` and is what
these functions will wrap for Flink SQL and the Table API.
"""
