"""CLI command groups; each module registers its subcommands on the ``xmrt`` command tree."""
