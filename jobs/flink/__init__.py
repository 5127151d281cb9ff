"""The PyFlink engine (docs/flink.md): the graph's stages as Flink operators, one per stage."""
