"""Benchmark harness behind `scripts/bench` (outside the `dosfs` package: it drives it).

Modules: `sizes` (how big each figure is per mode), `data` (deterministic test data), `worker` (the
child process that runs one side of an in-process figure and reports time and peak RSS), `mounting`
(a dosfs mount as a context manager, daemon RSS), `figures` (every figure: both sides, same data,
same run), `report` (ratios, table, JSON), `__main__` (the command line).
"""
