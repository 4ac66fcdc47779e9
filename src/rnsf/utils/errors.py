"""User-facing errors: one line that names the bad value and the fix, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or configuration (not a bug in rnsf)."""
