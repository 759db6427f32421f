"""Benchmarks, side by side with the tools an operator would use (make bench)."""
