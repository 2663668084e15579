"""Benchmarks: one script per figure, each printing its numbers and ratios."""
