"""Benchmarks: each script prints a table and a final JSON line (run as ``python -m benchmarks.NAME``)."""
