"""Redis infrastructure: embedded server, clients, checkpointer, store, locks, audit, metrics, registry."""
