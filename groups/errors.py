"""Errors of the group layer."""

from groupcc.errors import GroupccError


class GroupError(GroupccError):
    """A bad group name, table, element or representation."""
