"""Benchmarks: each script compares surge against a baseline measured in the same run (see README.md)."""
