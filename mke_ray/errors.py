"""Errors that name a problem with the user's input and its fix in one line."""


class TaskDataError(Exception):
    """A task's data cannot be used; the one-line message names the problem and the fix."""
