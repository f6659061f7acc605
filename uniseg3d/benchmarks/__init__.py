"""Metrics, leaderboards and speed benchmarks."""
