"""Benchmarks of the Mastery Engine, each against a baseline measured in the same run.

Run ``python -m bench`` (all) or ``python -m bench query consumer latency memory``;
bench/README.md describes what each measures and how.
"""
