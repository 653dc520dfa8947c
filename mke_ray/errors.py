"""Errors that name a problem with the user's input and its fix in one line, and the errors of a full disk."""

import errno


class TaskDataError(Exception):
    """A task's data cannot be used; the one-line message names the problem and the fix."""


class NonFiniteLossError(FloatingPointError):
    """A model's training loss became NaN or infinite: the run has diverged and has no result."""

    def __init__(self, epoch: int, value: float):
        super().__init__(f"training loss is {value} at epoch {epoch}; lower the learning rate or the "
                         f"regularization strength")
        self.epoch, self.value = epoch, value

    def __reduce__(self):  # pickled by Ray from a trial's process to the driver
        return type(self), (self.epoch, self.value)


DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_FULL_WORDS = ("no space left on device", "disk quota exceeded", "database or disk is full")


def disk_full(error: BaseException | str | None) -> bool:
    """Whether an error, or the message a trial's traceback ends with, is a full disk or an exceeded quota."""
    if isinstance(error, BaseException):
        seen: BaseException | None = error
        while seen is not None:
            if isinstance(seen, OSError) and seen.errno in DISK_FULL:
                return True
            seen = seen.__cause__ or seen.__context__
        error = str(error)
    return bool(error) and any(words in error.lower() for words in _FULL_WORDS)
