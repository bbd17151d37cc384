"""Errors raised by the groups layer."""


class GroupError(ValueError):
    """A bad group name, table, element or representation; the message names the value and what was expected."""
