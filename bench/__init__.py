"""Benchmarks of suture against a rebuild and the download floor (see bench/README.md)."""
