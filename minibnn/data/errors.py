"""Exceptions raised for anything wrong with dataset files."""

from __future__ import annotations

__all__ = ["DataError", "MissingDataError"]


class DataError(ValueError):
    """A dataset file is missing, malformed, truncated or fails its checksum.

    The message always names the file (or the directory searched) and says
    what is wrong, so it can be shown to a user as is.
    """


class MissingDataError(DataError):
    """A dataset's files are not in the data directory (as opposed to being bad).

    :func:`minibnn.data.load_dataset` catches this one, and only this one, to
    fetch the dataset when ``download=True``: a present but corrupt file is
    reported, never silently replaced.
    """
