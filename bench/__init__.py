"""Benchmarks and their helpers (synthetic AWQ checkpoints, in-process measurement); not part of the package."""
