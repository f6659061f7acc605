"""Leaderboards against the paper's numbers and the speed benchmarks (`uniseg3d bench`), which may
run the pipelines."""
