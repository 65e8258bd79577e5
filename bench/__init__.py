"""Benchmarks run by `make bench`: real-size shapes, random weights, printed as tables."""
