"""Benchmarks and the soak: ``python -m bench SCENARIO`` from the repository root (see
``bench/__main__.py``); figures go to BENCHMARKS.md."""
