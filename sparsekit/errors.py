"""User-facing errors.

Anything a user can fix (a wrong name, a missing file, an impossible setting) raises
`SparsekitError`, a `ValueError` whose message says what is wrong *and* how to fix it in one line.
The CLI turns it into one line on stderr and exit code 2; library callers can catch `ValueError`.
"""


class SparsekitError(ValueError):
    """Bad input that the user can correct. The message is a single actionable line."""


class UnsupportedArchitectureError(SparsekitError):
    """The model's architecture has no adapter and could not be inferred."""


class DataNotFoundError(SparsekitError, FileNotFoundError):
    """An evaluation or calibration data set is not where sparsekit looked for it."""
