"""Every use of a dependency's private API, one module per dependency, each guarded by a version check."""
