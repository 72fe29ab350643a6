"""Every script in examples/ runs to completion, as a user would run it.

Each example is started with ``sys.executable`` in a subprocess from the repository
root, with a timeout, and must exit with status 0.  ``shift_vs_standard.py`` trains two
networks and is run with ``--quick`` (one epoch on 300 sample images); the others run
with their defaults.  ``MINIBNN_DATA`` is removed from the environment so that every
example uses the embedded MNIST sample, whatever the machine has.
"""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

#: extra command-line arguments per example (CI budget: well under a minute each)
ARGS = {"shift_vs_standard.py": ["--quick"]}
TIMEOUT_S = 180          # generous: the CI machine may be shared; each example takes < 60 s

#: a line each example must print (a cheap check that it did what it says)
EXPECT = {
    "gradients_by_hand.py": "OK",
    "train_sample_and_export.py": "float test error",
    "test_my_kernel.py": "caught",
    "shift_vs_standard.py": "AP2 cost",
}


def example_files():
    return sorted(EXAMPLES.glob("*.py"))


def test_examples_exist():
    names = {p.name for p in example_files()}
    assert set(EXPECT) <= names, f"missing examples: {sorted(set(EXPECT) - names)}"


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_example_runs(path, tmp_path):
    env = dict(os.environ)
    env.pop("MINIBNN_DATA", None)
    env["MPLBACKEND"] = "Agg"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [sys.executable, str(path)] + ARGS.get(path.name, [])
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{path.name} did not finish in {TIMEOUT_S} s; output so far:\n"
                    f"{(exc.stdout or b'')[-3000:]!r}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd[1:])} exited with {proc.returncode}:\n{out[-4000:]}"
    want = EXPECT.get(path.name)
    if want:
        assert want in out, f"{path.name}: expected {want!r} in its output:\n{out[-3000:]}"


def test_shift_vs_standard_has_quick_flag():
    text = (EXAMPLES / "shift_vs_standard.py").read_text(encoding="utf-8")
    assert "--quick" in text
