"""Exception raised for anything wrong with dataset files."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A dataset file is missing, malformed, truncated or fails its checksum.

    The message always names the file (or the directory searched) and says
    what is wrong, so it can be shown to a user as is.
    """
