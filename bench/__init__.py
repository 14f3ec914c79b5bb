"""Benchmarks for Kanal; each prints its figures and never asserts timings.

Run from the repository root, e.g. `.venv/bin/python -m bench.relay_latency --help`.
"""
