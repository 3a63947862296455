"""User-facing errors.

Every error a user can cause (a bad name, a missing file, a bad config value) is raised as a
:class:`SelfSupError` with a one-line message naming the bad value and what would be valid.
The CLI prints that line and exits with status 2 instead of a traceback.
"""


class SelfSupError(Exception):
    """An error caused by the user's input, with a one-line, self-explaining message."""


class ConfigError(SelfSupError, ValueError):
    """A bad configuration key or value."""


class DataError(SelfSupError, ValueError):
    """A dataset, split, folder or image that cannot be used."""


class TrainingDiverged(SelfSupError, RuntimeError):
    """The loss or the model state became NaN or infinite; training stopped before writing it to a
    checkpoint (the message names the last checkpoint with finite values, if any)."""
