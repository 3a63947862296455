"""User-facing errors.

Every error a user can cause (a bad name, a missing file, a bad config value) is raised as a
:class:`SelfSupError` with a one-line message naming the bad value and what would be valid.
The CLI prints that line and exits with status 2 instead of a traceback.
"""


class SelfSupError(Exception):
    """An error caused by the user's input, with a one-line, self-explaining message."""

    def __init__(self, *args: object) -> None:
        # A DataLoader worker's exception is re-created in the main process from its type and a
        # message holding the worker's whole traceback (torch.utils.data._utils.ExceptionWrapper):
        # keep the original one line, which the traceback ends with as "module.Type: message".
        if len(args) == 1 and isinstance(args[0], str) and args[0].startswith("Caught ") \
                and "\nOriginal Traceback" in args[0]:
            last = args[0].rstrip().splitlines()[-1]
            args = (last.split(": ", 1)[1] if ": " in last else last,)
        super().__init__(*args)


class ConfigError(SelfSupError, ValueError):
    """A bad configuration key or value."""


class DataError(SelfSupError, ValueError):
    """A dataset, split, folder or image that cannot be used."""


class TrainingDiverged(SelfSupError, RuntimeError):
    """The loss or the model state became NaN or infinite; training stopped before writing it to a
    checkpoint (the message names the last checkpoint with finite values, if any)."""
