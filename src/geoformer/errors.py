"""User-facing errors.

Anything a user can cause (a bad flag, a missing file, a corrupt checkpoint) raises
:class:`GeoformerError`; the CLI prints its message as one line and exits with status 2.
Everything else is a bug and keeps its traceback.
"""


class GeoformerError(Exception):
    """An error caused by input; its message is shown to the user as one line."""


class TrainingDiverged(GeoformerError):
    """The loss became NaN or Inf; the last good checkpoint is left untouched."""


def error_line(e: BaseException) -> str:
    """``"TypeName: first line of the message"`` (the type alone when the message is empty): how a failure that
    is recorded as a result rather than raised (a benchmark case, a measuring child) is written."""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0]}" if msg else type(e).__name__
