"""Errors a user may see. The CLI prints their message on one line, without a traceback."""


class MnistganError(Exception):
    """A problem the user can fix (bad file, missing run, ...). CLI exit status 1."""


class UsageError(MnistganError):
    """A bad command-line argument or config value. CLI exit status 2."""


class DataError(MnistganError):
    """A dataset file that is missing, truncated, or fails its checksum."""


class CheckpointError(MnistganError):
    """A checkpoint or generator file that is missing, corrupt or not ours."""


class DivergenceError(MnistganError):
    """NaN or Inf in a loss or weight, or a collapsed D: the run stops (or rolls back)."""


class StorageError(MnistganError):
    """A run's files could not be written (disk full, read-only folder): the run stops, its
    last complete checkpoint intact."""


def brief(e: BaseException) -> str:
    """Another library's exception as a short one-line reason for our messages."""
    lines = str(e).strip().splitlines()
    text = lines[0].strip() if lines else type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."
