"""The one error type users see: a one-line message that names the problem and the fix."""


class UserError(ValueError):
    """Bad input from a user or a file. The CLI prints it as one line on stderr and exits non-zero."""


def is_user_error(exc: BaseException) -> bool:
    """A UserError, or an error type that declares `user_facing = True` (e.g. `sim.SimError`: `sim` cannot import
    robot_rl, so it marks its own error type instead of subclassing this one)."""
    return isinstance(exc, UserError) or bool(getattr(type(exc), "user_facing", False))
