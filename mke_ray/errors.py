"""Errors that name a problem with the user's input and its fix in one line."""


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
