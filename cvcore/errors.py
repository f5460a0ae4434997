"""Errors caused by what the user gave us (a data set, a checkpoint, a request).

Commands catch `UserError` and print its message instead of a traceback; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message says what and where."""


class DataError(UserError):
    """The data set cannot be used as given (schema errors, nothing usable left)."""


class ImageError(UserError):
    """An image cannot be decoded safely (not an image, truncated, too many pixels)."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, or does not fit what it is used with."""
