"""The ``xmrt bench ...`` subcommands. The CLI loads them when this directory is there (a checkout)."""
