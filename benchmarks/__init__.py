"""Benchmarks side by side with the Node reference server (issue 4); see docs/benchmarks.md."""
