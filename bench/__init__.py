"""Benchmarks: python -m bench.<name> --json. They report figures; tests assert behaviour."""
