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


def test_checkpoint_is_stored_uncompressed_and_reads_back(tmp_path):
    # deflating a 3x4096 MLP's latent weights and Adam moments took ~13 s of a ~60 s
    # epoch for almost no saving: checkpoints are stored, not deflated
    import zipfile

    from minibnn.checkpoint import save_checkpoint
    w = np.random.default_rng(0).standard_normal((30, 20)).astype(np.float32)
    perm = np.arange(7)
    save_checkpoint(tmp_path / "c.npz", {"w": w}, {"m": w * 2}, {"epoch": 1}, {"perm": perm})
    with zipfile.ZipFile(tmp_path / "c.npz") as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
    model, opt, meta, run = load_checkpoint(tmp_path / "c.npz", with_run_state=True)
    np.testing.assert_array_equal(model["w"], w)
    np.testing.assert_array_equal(opt["m"], w * 2)
    np.testing.assert_array_equal(run["perm"], perm)
    assert meta["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]          # no temporary left


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


@pytest.mark.plot
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


# ---------------------------------------------------------------------------
# resume: partial epochs, other settings, more epochs (issues 11 and 15.10)
# ---------------------------------------------------------------------------

WALL_CLOCK = ("seconds", "elapsed")


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK} for line in f]


def _quiet(**kw):
    return dict(progress=False, log=lambda *a: None, **kw)


def test_interrupted_epoch_row_equals_uninterrupted(tmp_path, sample):
    # the row of an epoch stopped (as by Ctrl-C) and resumed counts every batch, and every
    # field but the wall-clock ones equals the uninterrupted run's
    cfg = small_config(epochs=2, dropout_hidden=0.1)
    train(cfg, tmp_path / "full", dataset=sample, **_quiet())
    cut = tmp_path / "cut"
    assert not train(cfg, cut, dataset=sample, stop_after_batches=5, **_quiet())["finished"]
    assert _rows(cut) == []
    assert not train(cfg, cut, resume=True, dataset=sample, stop_after_batches=10,
                     **_quiet())["finished"]
    assert train(cfg, cut, resume=True, dataset=sample, **_quiet())["finished"]
    assert _rows(cut) == _rows(tmp_path / "full")
    a, b = _weights(tmp_path / "full"), _weights(cut)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_resume_refuses_other_settings_and_extends_on_request(tmp_path, sample):
    from minibnn.schedules import ExponentialDecay

    run = tmp_path / "run"
    cfg = small_config(epochs=2)
    train(cfg, run, dataset=sample, **_quiet())
    with pytest.raises(ValueError, match=r"epochs 4 \(stored: 2\)"):
        train(small_config(epochs=4), run, resume=True, dataset=sample, **_quiet())
    # nothing was changed by the refused call
    assert [r["epoch"] for r in _rows(run)] == [1, 2]
    s = train(None, run, resume=True, dataset=sample, extend_epochs=2, **_quiet())
    assert s["finished"] and s["epochs_planned"] == 4
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    # the schedule keeps its 2-epoch horizon: the same decay factor per epoch, past lr_end
    sched = ExponentialDecay(cfg.lr_start, cfg.lr_end, 2)
    assert [r["lr"] for r in rows] == [float(sched(e)) for e in range(4)]
    stored = json.load(open(run / "config.json"))
    assert stored["epochs"] == 4 and stored["schedule_epochs"] == 2
    # ... and equals a run planned that way from the start
    once = tmp_path / "once"
    train(small_config(epochs=4, schedule_epochs=2), once, dataset=sample, **_quiet())
    assert _rows(once) == rows
    a, b = _weights(once), _weights(run)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_resume_may_change_where_data_and_kernels_are(tmp_path, sample):
    run = tmp_path / "run"
    train(small_config(epochs=1), run, dataset=sample, stop_after_batches=3, **_quiet())
    logged = []
    s = train({"backend": "reference", "data_dir": str(tmp_path)}, run, resume=True,
              dataset=sample, progress=False, log=logged.append)
    assert s["finished"]
    assert any("backend 'reference'" in m and "stored: 'cpu'" in m for m in logged)


def test_summary_is_valid_json_before_the_first_epoch(tmp_path, sample):
    train(small_config(), tmp_path, dataset=sample, stop_after_batches=2, **_quiet())

    def refuse(name):
        raise AssertionError(f"summary.json holds {name}")

    summary = json.loads((tmp_path / "summary.json").read_text(), parse_constant=refuse)
    assert summary["best_val_error"] is None and summary["best_epoch"] == -1
    assert not summary["finished"]


def test_run_directory_respects_umask_and_clears_stale_temporaries(tmp_path, sample):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".tmp-abc-last.npz").write_bytes(b"half a file")
    old = os.umask(0o027)
    try:
        train(small_config(epochs=1), run, dataset=sample, **_quiet())
    finally:
        os.umask(old)
    assert not [n for n in os.listdir(run) if n.startswith(".tmp-")]
    for name in ("config.json", "metrics.jsonl", "last.npz", "best.npz", "summary.json"):
        assert (run / name).stat().st_mode & 0o777 == 0o640, name


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_cli_unwritable_out_is_one_clear_line(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        rc = main(["train", "--dataset", "sample", "--out", str(locked / "run")])
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not writable" in err[0]


def test_cli_resume_extend_epochs(tmp_path, capsys):
    out = str(tmp_path / "run")
    base = ["train", "--dataset", "sample", "--hidden", "16", "--depth", "1", "--epochs", "1",
            "--batch-size", "100", "--limit-train", "200", "--out", out, "--no-progress"]
    assert main(base) == 0
    capsys.readouterr()
    assert main(["train", "--out", out, "--resume", "--epochs", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "epochs 3 (stored: 1)" in err and "--extend-epochs" in err
    assert main(["train", "--out", out, "--resume", "--extend-epochs", "2", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["finished"] and summary["epochs_planned"] == 3
    assert [r["epoch"] for r in _rows(out)] == [1, 2, 3]


def test_cli_plot_without_matplotlib_is_one_clear_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "matplotlib" in err[0] and "minibnn[plot]" in err[0]


def test_cli_choices_come_from_the_registry():
    from minibnn import registry
    from minibnn.cli import build_parser

    _, sub, _ = build_parser()
    actions = {a.dest: a for a in sub.choices["train"]._actions}
    assert list(actions["optimizer"].choices) == list(registry.OPTIMIZERS)
    assert list(actions["schedule"].choices) == list(registry.SCHEDULES)
    assert list(actions["loss"].choices) == list(registry.LOSSES)
    assert list(actions["arch"].choices) == registry.architectures()
    assert list(actions["backend"].choices) == list(registry.backends())


@pytest.mark.parametrize("name", ["adam", "adamax", "shift-adamax", "sgd", "bop"])
def test_every_registered_optimizer_trains_and_resumes(tmp_path, sample, name):
    from minibnn import registry
    assert name in registry.OPTIMIZERS
    cfg = small_config(epochs=1, optimizer=name, hidden=32)
    train(cfg, tmp_path / "full", dataset=sample, **_quiet())
    cut = tmp_path / "cut"
    train(cfg, cut, dataset=sample, stop_after_batches=4, **_quiet())
    train(cfg, cut, resume=True, dataset=sample, **_quiet())
    a, b = _weights(tmp_path / "full"), _weights(cut)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}: {k}")
    assert _rows(cut) == _rows(tmp_path / "full")


# ---------------------------------------------------------------------------
# CLI wiring of other layers' features (present when their function is)
# ---------------------------------------------------------------------------

def test_cli_fetch_calls_the_data_layer(tmp_path, monkeypatch, capsys):
    import minibnn.data
    calls = []

    def fake_fetch(name, data_dir=None, source=None, progress=True):
        calls.append((name, data_dir, source, progress))
        return str(tmp_path / name)

    monkeypatch.setattr(minibnn.data, "fetch_dataset", fake_fetch, raising=False)
    assert main(["fetch", "mnist", "--from", "copy", "--data-dir", str(tmp_path)]) == 0
    assert calls == [("mnist", str(tmp_path), "copy", True)]


def test_cli_selftest_calls_main_selftest(monkeypatch):
    import importlib.machinery
    import sys
    import types
    calls = []
    mod = types.ModuleType("minibnn.selftest")
    mod.__spec__ = importlib.machinery.ModuleSpec("minibnn.selftest", None)
    mod.main_selftest = lambda backend, examples=100: calls.append((backend, examples)) or 0
    monkeypatch.setitem(sys.modules, "minibnn.selftest", mod)
    assert main(["selftest", "--backend", "cpu", "--examples", "5"]) == 0
    assert main(["selftest"]) == 0
    assert calls == [("cpu", 5), ("cpu", 100)]


def test_cli_eval_refuses_non_finite_images(tmp_path, monkeypatch, capsys):
    import dataclasses

    import minibnn.data
    from minibnn import zoo

    model_npz, bnn = tmp_path / "m.npz", tmp_path / "m.bnn"
    zoo.build("mnist_mlp", hidden=16, depth=1, seed=0).save(model_npz)
    assert main(["export", str(model_npz), "--out", str(bnn), "--input-shape", "1,28,28"]) == 0
    capsys.readouterr()
    real = minibnn.data.load_dataset

    def with_inf(name, **kw):
        ds = real("sample", limit_train=100)
        x = ds.x_test.copy()
        x[3, 0, 5, 5] = np.inf
        return dataclasses.replace(ds, x_test=x)

    monkeypatch.setattr(minibnn.data, "load_dataset", with_inf)
    assert main(["eval", str(bnn), "--dataset", "sample", "--limit", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test images" in err[0] and "infinity" in err[0]


def test_stochastic_weights_run_resumes_bit_exactly(tmp_path, sample):
    from minibnn import registry, zoo
    if not registry.accepts(zoo.mnist_mlp, "stochastic_weights"):
        pytest.skip("the zoo builders do not take stochastic_weights yet")
    cfg = small_config(epochs=1, stochastic_weights=True)
    train(cfg, tmp_path / "full", dataset=sample, **_quiet())
    cut = tmp_path / "cut"
    train(cfg, cut, dataset=sample, stop_after_batches=5, **_quiet())
    train(cfg, cut, resume=True, dataset=sample, **_quiet())
    a, b = _weights(tmp_path / "full"), _weights(cut)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert json.load(open(cut / "config.json"))["stochastic_weights"] is True


def test_train_on_own_arrays_follows_their_shape_and_classes(tmp_path):
    """Dataset.from_arrays into train(): the label is free, the model follows the data's
    image shape and number of classes, and the run resumes with the same dataset."""
    from minibnn.data import Dataset
    from minibnn.model import Sequential

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (400, 6, 5), dtype=np.uint8)
    y = rng.integers(0, 4, 400)
    ds = Dataset.from_arrays(x[:300], y[:300], x[300:], y[300:], n_classes=4, name="mine")
    cfg = TrainConfig(dataset="mine", hidden=16, depth=1, epochs=2, batch_size=50, seed=3)
    s = train(cfg, tmp_path, dataset=ds, progress=False, log=lambda *a: None,
              stop_after_batches=7)
    assert not s["finished"]
    s = train(None, tmp_path, resume=True, dataset=ds, progress=False, log=lambda *a: None)
    assert s["finished"]
    model = Sequential.load(tmp_path / "best.npz")
    assert model.forward(ds.x_test[:3], training=False).shape == (3, 4)
    with pytest.raises(ValueError, match="dataset"):
        train(TrainConfig(dataset="mine"), tmp_path / "other", progress=False,
              log=lambda *a: None)
