"""Exceptions that layerprune raises for problems the user can fix.

The CLI turns a :class:`UserError` into a one-line message and exit code 2; every
other exception is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input: an unknown name, out-of-range indices, a missing file, an offline hub id."""
