"""User-facing errors.

Anything a user can cause (a bad flag, a missing file, a corrupt checkpoint) raises
:class:`GeoformerError`; the CLI prints its message as one line and exits with status 2.
Everything else is a bug and keeps its traceback.
"""


class GeoformerError(Exception):
    """An error caused by input; its message is shown to the user as one line."""


class TrainingDiverged(GeoformerError):
    """The loss became NaN or Inf; the last good checkpoint is left untouched."""
