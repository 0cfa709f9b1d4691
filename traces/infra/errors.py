"""The project's one user-facing input-error type.

Every package (traces, placement, simulator, experiments) raises :class:`InputError` for bad
input a user can fix (a malformed file, an impossible configuration).  The command line catches
it and prints its message as one line with exit code 2.  It lives in ``traces`` because that is
the bottom layer that every other package already depends on.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: the message says what, where, and how to fix it."""
