"""Benchmark evaluation (T2I-CompBench++, DPG-Bench, the built-in world); sees a model only through `generate_fn`."""
