"""The bad-input catalog: one row per bad input, grouped by area in ``rows_*.py``.

Every row says what is tried and what must come back:

* :class:`Case` -- a Python call.  ``call(tmp_path)`` must raise ``exc`` (a type or a tuple
  of types) whose message contains every phrase in ``phrases`` (case-insensitive).
* :class:`CliCase` -- a command line, run as a subprocess (``python -m minibnn ARGV``) so
  that a crash shows as a crash.  ``argv`` is a list, or a callable ``argv(tmp_path)``
  that writes the files the case needs and returns the list.  The command must exit with
  ``code`` (2 unless said otherwise) and print exactly one line to stderr starting with
  ``minibnn CMD: error:`` that contains every phrase, and no traceback.

Each ``rows_*.py`` module defines ``ROWS`` (a list of rows); ``tests/test_bad_inputs.py``
collects them all.  Add a row where its area's module is; ids must be unique.
"""

import dataclasses
from typing import Any, Callable, Sequence, Tuple, Union


def _phrases(p):
    return (p,) if isinstance(p, str) else tuple(p)


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Any], Any]
    exc: Union[type, Tuple[type, ...]]
    phrases: Union[str, Sequence[str]] = ()

    def __post_init__(self):
        object.__setattr__(self, "phrases", _phrases(self.phrases))


@dataclasses.dataclass(frozen=True)
class CliCase:
    id: str
    argv: Union[Sequence[str], Callable[[Any], Sequence[str]]]
    phrases: Union[str, Sequence[str]] = ()
    code: int = 2
    timeout: float = 120.0

    def __post_init__(self):
        object.__setattr__(self, "phrases", _phrases(self.phrases))
