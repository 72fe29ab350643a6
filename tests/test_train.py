"""The training loop and the command line: a run learns, resumes bit for bit, plots."""

import json
import os

import numpy as np
import pytest

from minibnn.checkpoint import load_checkpoint
from minibnn.cli import main
from minibnn.data import load_dataset
from minibnn.train import TrainConfig, train


def small_config(**kw):
    base = dict(dataset="sample", hidden=64, depth=2, epochs=3, batch_size=50, lr_start=3e-3,
                lr_end=3e-4, limit_train=600, seed=7)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def sample():
    return load_dataset("sample", limit_train=600)


def _weights(run_dir):
    model_state, _, _ = load_checkpoint(os.path.join(run_dir, "last.npz"))
    return model_state


def test_train_writes_run_directory_and_learns(tmp_path, sample):
    summary = train(small_config(), tmp_path, dataset=sample, progress=False, log=lambda *a: None)
    for name in ("config.json", "metrics.jsonl", "best.npz", "last.npz", "summary.json"):
        assert (tmp_path / name).exists(), name
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for key in ("lr", "train_loss", "train_error", "val_error", "test_error", "seconds", "flip_ratio"):
        assert key in rows[0]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert summary["best_val_error"] < 0.5  # chance is 0.9
    assert summary["finished"]
    assert json.load(open(tmp_path / "summary.json"))["best_epoch"] == summary["best_epoch"]


def test_resume_is_bit_identical(tmp_path, sample):
    full = tmp_path / "full"
    cut = tmp_path / "cut"
    cfg = small_config()
    train(cfg, full, dataset=sample, progress=False, log=lambda *a: None)
    # 600 images / 50 = 12 batches an epoch: stop mid-epoch 2, then at an epoch boundary
    s1 = train(cfg, cut, dataset=sample, progress=False, log=lambda *a: None, stop_after_batches=17)
    assert not s1["finished"]
    s2 = train(cfg, cut, resume=True, dataset=sample, progress=False, log=lambda *a: None,
               stop_after_batches=7)
    assert not s2["finished"]
    s3 = train(cfg, cut, resume=True, dataset=sample, progress=False, log=lambda *a: None)
    assert s3["finished"]
    a, b = _weights(full), _weights(cut)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    rows_full = [json.loads(line) for line in open(full / "metrics.jsonl")]
    rows_cut = [json.loads(line) for line in open(cut / "metrics.jsonl")]
    assert [r["val_error"] for r in rows_full] == [r["val_error"] for r in rows_cut]


def test_same_seed_same_weights(tmp_path, sample):
    cfg = small_config(epochs=1)
    train(cfg, tmp_path / "a", dataset=sample, progress=False, log=lambda *a: None)
    train(cfg, tmp_path / "b", dataset=sample, progress=False, log=lambda *a: None)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_cli_train_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    rc = main(["train", "--dataset", "sample", "--hidden", "32", "--depth", "1", "--epochs", "2",
               "--batch-size", "100", "--limit-train", "500", "--out", str(out), "--no-progress"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["finished"] and summary["best_epoch"] in (1, 2)
    assert main(["plot", str(out)]) == 0
    assert (out / "curves.png").stat().st_size > 5000
    assert (out / "latent_hist.png").exists()


def test_cli_errors_are_clear(tmp_path, capsys):
    rc = main(["train", "--dataset", "sample", "--out", str(tmp_path / "x"), "--resume"])
    assert rc == 2
    assert "no checkpoint" in capsys.readouterr().err
    rc = main(["plot", str(tmp_path / "nothing")])
    assert rc == 2
    assert "metrics.jsonl" in capsys.readouterr().err


def test_cli_unavailable_backend_fails_at_selection(tmp_path, capsys):
    from minibnn.kernels import available_backends
    if "cuda" in available_backends():
        pytest.skip("cuda available")
    rc = main(["train", "--dataset", "sample", "--backend", "cuda", "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "cuda" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_python_dash_m(tmp_path):
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "minibnn", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "train" in res.stdout


def test_keep_large_allocations_respects_an_explicit_setting(monkeypatch):
    import platform
    import sys

    import minibnn
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert minibnn.keep_large_allocations() is False          # the user's choice wins
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    applied = minibnn.keep_large_allocations()
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert applied is True
    else:
        assert applied is False                                   # no mallopt: a no-op
    # memory from the heap afterwards still behaves: a big array round-trips
    a = np.arange(20_000_000, dtype=np.int64)                 # 160 MB, above any threshold
    assert int(a[-1]) == 19_999_999 and int(a[::1_000_000].sum()) == 190_000_000
