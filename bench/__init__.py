"""Benchmarks that measure Sluice side by side with a baseline in one run (`python -m bench.<name>`)."""
