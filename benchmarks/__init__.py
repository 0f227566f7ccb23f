"""Benchmarks and studies of the project, each run by an ``xmrt bench …`` command."""
