"""The one error type of the sim package, kept free of robot_rl so that `sim` stays importable on its own."""


class SimError(ValueError):
    """Bad input to a mirror (task, variant, robot file, action): a one-line message naming the problem and the fix.

    It subclasses ValueError so that callers (the `robot-rl` CLI) can print it as one line without importing sim.
    """

    user_facing = True  # robot_rl.errors.is_user_error: print as one line, exit 2
