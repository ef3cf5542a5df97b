"""Benchmarks of the toolkit against its peers: python -m benchmarks.<name> from the repo root."""
