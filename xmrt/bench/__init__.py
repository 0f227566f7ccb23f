"""Benchmarks that run in one process and report ratios measured in the same run (``xmrt bench ...``)."""
