"""Errors that the entry points turn into one clear line instead of a traceback."""


class XmrtError(Exception):
    """A failure the user should see as one line (exit code 1 in the CLI, 5xx/4xx over HTTP)."""


class UserError(XmrtError):
    """Bad input from the user: a bad file, argument or request (exit code 2 in the CLI, 4xx over HTTP)."""
