"""Every bad input gets a clear error: the catalog in ``tests/bad_inputs/`` row by row.

Python rows must raise the stated exception with the stated phrases in its message.
CLI rows run in their own process: exit code 2, exactly one stderr line
``minibnn CMD: error: ...`` holding the phrases, and never a traceback.
"""

import importlib
import os
import pkgutil
import subprocess
import sys

import pytest

from bad_inputs import Case, CliCase
import bad_inputs


def _rows():
    rows = []
    for info in sorted(pkgutil.iter_modules(bad_inputs.__path__), key=lambda i: i.name):
        if info.name.startswith("rows_"):
            mod = importlib.import_module(f"bad_inputs.{info.name}")
            rows.extend(mod.ROWS)
    ids = [r.id for r in rows]
    dup = {i for i in ids if ids.count(i) > 1}
    assert not dup, f"duplicate catalog ids: {sorted(dup)}"
    return rows


ROWS = _rows()
PY_ROWS = [r for r in ROWS if isinstance(r, Case)]
CLI_ROWS = [r for r in ROWS if isinstance(r, CliCase)]


def test_catalog_is_large_enough():
    # the issue asked for "well over 100"; this guards against rows silently vanishing
    assert len(ROWS) >= 100, len(ROWS)


def _assert_phrases(message, phrases, what):
    low = message.lower()
    missing = [p for p in phrases if p.lower() not in low]
    assert not missing, f"{what}: message {message!r} lacks {missing}"


@pytest.mark.parametrize("row", PY_ROWS, ids=[r.id for r in PY_ROWS])
def test_python_bad_input(row, tmp_path):
    with pytest.raises(row.exc) as info:
        row.call(tmp_path)
    _assert_phrases(str(info.value), row.phrases, row.id)


@pytest.mark.parametrize("row", CLI_ROWS, ids=[r.id for r in CLI_ROWS])
def test_cli_bad_input(row, tmp_path):
    argv = row.argv(tmp_path) if callable(row.argv) else row.argv
    argv = [os.fspath(a) for a in argv]
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    proc = subprocess.run([sys.executable, "-m", "minibnn", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=row.timeout,
                          stdin=subprocess.DEVNULL)
    err = proc.stderr
    assert "Traceback" not in err, f"{row.id}: traceback\n{err}"
    assert proc.returncode == row.code, (f"{row.id}: exit {proc.returncode}, expected "
                                         f"{row.code}\nstderr: {err}\nstdout: {proc.stdout[-2000:]}")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"{row.id}: expected one stderr line, got {lines}"
    cmd = argv[0]
    assert lines[0].startswith(f"minibnn {cmd}: error: "), f"{row.id}: {lines[0]!r}"
    _assert_phrases(lines[0], row.phrases, row.id)
