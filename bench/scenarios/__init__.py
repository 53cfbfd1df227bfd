"""What the benchmark measures, one module per part; each function takes the :class:`bench.harness.Bench`."""
