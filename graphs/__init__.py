"""Compiled LangGraph graphs, one module each; every module exports ``builder`` and ``graph``."""
