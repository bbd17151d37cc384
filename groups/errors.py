"""Errors raised by groupcc. Every layer's user-facing errors subclass :class:`GroupccError`, so the command
line reports them as one line (its message names the bad value and what was expected)."""


class GroupccError(ValueError):
    """Base of the errors a user can cause and fix (bad input, bad arguments, missing or corrupt files)."""


class GroupError(GroupccError):
    """A bad group name, table, element or representation."""
