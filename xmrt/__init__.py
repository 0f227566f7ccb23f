"""XMRT runtime: configuration, embedded Redis, persistence, providers and entry points."""
