"""Benchmarks: `cairn bench ...` commands that measure here and record in BENCHMARKS.md."""
