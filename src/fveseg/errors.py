"""User-facing errors.

Every error a user can cause (bad file, bad option, existing output) is an `FvesegError` whose message
names the problem and the fix. The CLI and the napari widget show that message without a traceback.
"""


class FvesegError(Exception):
    """Base class of errors caused by user input; the message says what to do."""


class InputError(FvesegError, ValueError):
    """An input array, file or option is not usable."""


class CheckpointError(FvesegError):
    """A model checkpoint is missing, corrupt or does not match its configuration."""


class OutputExistsError(FvesegError, FileExistsError):
    """The output path exists and overwriting was not requested."""


class Cancelled(FvesegError):
    """The run was cancelled by the user; no partial output was kept."""
