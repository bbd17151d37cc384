"""The one base error of groupcc. Every layer's user-facing errors subclass :class:`GroupccError`, so the command
line reports them as one line (the message names the bad value and what was expected). This module imports
nothing, so every layer may import it."""


class GroupccError(ValueError):
    """Base of the errors a user can cause and fix (bad input, bad arguments, missing or corrupt files)."""
