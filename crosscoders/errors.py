"""Errors raised by the dictionary layer."""

from groupcc.errors import GroupccError


class DictionaryError(GroupccError):
    """A bad dictionary configuration, a missing or corrupt dictionary directory, or activations that do not
    fit a dictionary; the message is one line naming the bad value and what was expected."""
