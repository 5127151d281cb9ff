"""Pure domain libraries the stage operators are built from: no I/O, no clocks."""
