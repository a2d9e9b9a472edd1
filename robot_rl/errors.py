"""The one error type users see: a one-line message that names the problem and the fix."""


class UserError(ValueError):
    """Bad input from a user or a file. The CLI prints it as one line on stderr and exits non-zero."""
