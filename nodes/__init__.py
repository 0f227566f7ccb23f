"""Node functions: the nodes of ``graphs/<name>.py`` are in ``nodes/<name>.py``; the rest are shared pieces.

Shared: ``retrieval``, ``grounding``, ``citations``, ``parsing``, ``models`` (chat model and retried calls),
``verdicts`` (Eliza's model verdicts) and ``routing`` (the orchestrator's routes and batch runner).
"""
