"""``minibnn.selftest``: the installed-package kernel check passes on the real kernels,
catches and shrinks a planted bug, and refuses bad arguments clearly."""

import io
import re
from unittest import mock

import pytest

from minibnn import kernels, selftest
from minibnn.kernels import BackendUnavailable, available_backends


def run(**kw):
    out = io.StringIO()
    code = selftest.main_selftest(stream=out, seed=kw.pop("seed", 1), **kw)
    return code, out.getvalue()


def test_every_property_passes_on_cpu():
    code, text = run(backend="cpu", examples=3)
    assert code == 0, text
    for name in selftest.PROPERTY_NAMES:
        assert re.search(rf"cpu\s+{re.escape(name)}\s+passed", text), text
    assert f"{len(selftest.PROPERTY_NAMES)} of {len(selftest.PROPERTY_NAMES)} passed" in text


def test_a_planted_bug_fails_with_the_shrunk_counterexample(monkeypatch):
    """xnor_gemm off by 2 whenever K crosses a word boundary: the row says FAILED and
    the counterexample is the smallest such case, K = 65 with one row each side."""
    real = kernels.xnor_gemm

    def buggy(a_words, b_words, k, out=None, backend=None):
        res = real(a_words, b_words, k, out=out, backend=backend)
        return res + 2 if k > 64 else res

    monkeypatch.setattr(kernels, "xnor_gemm", buggy)
    code, text = run(backend="cpu", examples=60, properties=["xnor_gemm", "pack"])
    assert code == 1, text
    assert re.search(r"cpu\s+xnor_gemm\s+FAILED", text), text
    assert re.search(r"cpu\s+pack\s+passed", text), text
    assert "error: AssertionError" in text and "xnor_gemm[cpu]" in text
    assert "smallest counterexample: (array(1, 65) float64" in text, text
    assert "1 of 2 passed; 1 FAILED" in text


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="backend must be one of cpu, cuda, all"):
        selftest.main_selftest(backend="gpu", stream=io.StringIO())
    with pytest.raises(ValueError, match="examples must be >= 1"):
        selftest.main_selftest(examples=0, stream=io.StringIO())
    with pytest.raises(ValueError, match="property must be one of"):
        selftest.main_selftest(properties=["gemm"], stream=io.StringIO())


def test_missing_hypothesis_is_a_clear_error():
    real = selftest.importlib.util.find_spec

    def no_hypothesis(name, *a, **kw):
        return None if name == "hypothesis" else real(name, *a, **kw)

    with mock.patch.object(selftest.importlib.util, "find_spec", no_hypothesis):
        with pytest.raises(RuntimeError, match=r"needs hypothesis: pip install 'minibnn\[selftest\]'"):
            selftest.main_selftest(stream=io.StringIO())


@pytest.mark.skipif("cuda" in available_backends(), reason="a CUDA device (or simulator) is here")
def test_unavailable_cuda_named_or_skipped():
    with pytest.raises(BackendUnavailable, match="cuda"):
        selftest.main_selftest(backend="cuda", examples=1, stream=io.StringIO())
    code, text = run(backend="all", examples=2, properties=["pack"])
    assert code == 0, text
    assert re.search(r"cuda .*SKIPPED\s+unavailable", text), text
    assert "1 of 1 passed" in text


def test_cli_selftest(capsys):
    from minibnn.cli import main

    assert main(["selftest", "--backend", "cpu", "--examples", "2"]) == 0
    out = capsys.readouterr().out
    assert "selftest" in out and f"{len(selftest.PROPERTY_NAMES)} of" in out
