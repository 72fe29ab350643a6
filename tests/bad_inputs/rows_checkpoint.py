"""Bad checkpoints and bad resumes (ids ``ckpt-``): ``minibnn train --resume`` on a
``last.npz`` that was damaged in one way, or with settings that differ from the run's.

A tiny run is trained once per test process (the template) and copied into each row's
directory; ``_mutate`` rewrites its ``last.npz`` with one thing wrong.
"""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bad_inputs import Case, CliCase

_SETTINGS = dict(dataset="sample", hidden=16, depth=1, epochs=2, batch_size=100,
                 limit_train=200, seed=3)
_templates = {}


def _template(kind):
    """A run directory: ``"mid"`` stopped inside epoch 2 (batch 1 of 2), ``"done"``
    finished (2 epochs)."""
    if kind not in _templates:
        from minibnn.train import TrainConfig, train
        d = Path(tempfile.mkdtemp(prefix=f"minibnn-ckpt-{kind}-"))
        train(TrainConfig(**_SETTINGS), d, progress=False, log=lambda *a: None,
              stop_after_batches=3 if kind == "mid" else None)
        _templates[kind] = d
    return _templates[kind]


def _run(tmp_path, kind="mid"):
    run = tmp_path / "run"
    shutil.copytree(_template(kind), run)
    return run


def _resume(run, *extra):
    return ["train", "--out", run, "--resume", "--no-progress", *extra]


def _read(path):
    with np.load(path, allow_pickle=False) as z:
        files = {k: z[k] for k in z.files}
    return files, json.loads(str(files["meta"]))


def _mutate(change, kind="mid", extra=()):
    """Row argv: copy the template, let ``change(files, meta)`` edit the archive entries
    and the meta dict in place (or return raw bytes for the whole file), write it back."""
    def argv(tmp_path):
        run = _run(tmp_path, kind)
        last = run / "last.npz"
        files, meta = _read(last)
        raw = change(files, meta)
        if isinstance(raw, bytes):
            last.write_bytes(raw)
        else:
            with open(last, "wb") as f:
                np.savez(f, **files)
        return _resume(run, *extra)
    return argv


def _set_meta(**kw):
    def change(files, meta):
        meta.update(kw)
        files["meta"] = np.array(json.dumps(meta))
    return change


def _del_meta(key):
    def change(files, meta):
        del meta[key]
        files["meta"] = np.array(json.dumps(meta))
    return change


def _drop(prefix, manifest_too):
    def change(files, meta):
        for k in [k for k in files if k.startswith(prefix)]:
            del files[k]
            if manifest_too:
                meta["arrays"].pop(k, None)
        files["meta"] = np.array(json.dumps(meta))
    return change


def _first(files, prefix):
    return sorted(k for k in files if k.startswith(prefix) and files[k].ndim == 2)[0]


def _reshape(prefix, manifest_too):
    def change(files, meta):
        k = _first(files, prefix)
        files[k] = np.zeros((3, 5), dtype=files[k].dtype)
        if manifest_too:
            meta["arrays"][k] = [[3, 5], files[k].dtype.str]
        files["meta"] = np.array(json.dumps(meta))
    return change


def _replace(key, value):
    def change(files, meta):
        files[key] = np.asarray(value)
        meta["arrays"][key] = [list(files[key].shape), files[key].dtype.str]
        files["meta"] = np.array(json.dumps(meta))
    return change


def _meta_text(text):
    def change(files, meta):
        files["meta"] = np.array(text)
    return change


def _no_meta(files, meta):
    del files["meta"]


def _config_change(**kw):
    def change(files, meta):
        meta["config"].update(kw)
        files["meta"] = np.array(json.dumps(meta))
    return change


def _rng_no_data(files, meta):
    del meta["rng"]["data"]
    files["meta"] = np.array(json.dumps(meta))


def _acc_broken(files, meta):
    del meta["epoch_acc"]["stats"]
    files["meta"] = np.array(json.dumps(meta))


def _garbage(files, meta):
    return np.random.default_rng(1).bytes(500)


def _truncated(kind="mid"):
    def argv(tmp_path):
        run = _run(tmp_path, kind)
        last = run / "last.npz"
        data = last.read_bytes()
        last.write_bytes(data[: len(data) // 2])
        return _resume(run)
    return argv


def _empty(tmp_path):
    run = _run(tmp_path)
    (run / "last.npz").write_bytes(b"")
    return _resume(run)


def _last_is_dir(tmp_path):
    run = tmp_path / "run"
    (run / "last.npz").mkdir(parents=True)
    return _resume(run)


def _resume_with(kind, *extra):
    def argv(tmp_path):
        return _resume(_run(tmp_path, kind), *extra)
    return argv


# -- Python-level rows ------------------------------------------------------------
def _py_load_missing(tmp_path):
    from minibnn.checkpoint import load_checkpoint
    return load_checkpoint(tmp_path / "nope.npz")


def _py_resume_other_settings(tmp_path):
    from minibnn.train import TrainConfig, train
    run = _run(tmp_path, "done")
    cfg = TrainConfig(**dict(_SETTINGS, epochs=5))
    return train(cfg, run, resume=True, progress=False, log=lambda *a: None)


def _py_extend_fresh(tmp_path):
    from minibnn.train import TrainConfig, train
    return train(TrainConfig(**_SETTINGS), tmp_path / "run", extend_epochs=2, progress=False,
                 log=lambda *a: None)


def _py_resume_config_unknown_key(tmp_path):
    from minibnn.train import TrainConfig, resume_config
    return resume_config(TrainConfig(**_SETTINGS).to_dict(), {"epochz": 3})


ROWS = [
    # meta: not JSON, not an object, entries missing (issue 11: name the file)
    CliCase("ckpt-meta-not-json", _mutate(_meta_text("{not json")), ["last.npz", "meta", "JSON"]),
    CliCase("ckpt-meta-not-object", _mutate(_meta_text("[1, 2]")), ["last.npz", "meta", "object"]),
    CliCase("ckpt-meta-missing", _mutate(_no_meta), ["last.npz", "meta"]),
    CliCase("ckpt-meta-no-rng", _mutate(_del_meta("rng")), ["last.npz", "rng"]),
    CliCase("ckpt-meta-rng-no-data", _mutate(_rng_no_data), ["last.npz", "data"]),
    CliCase("ckpt-meta-no-config", _mutate(_del_meta("config")), ["last.npz", "config"]),
    CliCase("ckpt-meta-no-epoch", _mutate(_del_meta("epoch")), ["last.npz", "epoch"]),
    CliCase("ckpt-meta-epoch-negative", _mutate(_set_meta(epoch=-1)), ["last.npz", "negative"]),
    CliCase("ckpt-meta-batch-text", _mutate(_set_meta(batch="3")), ["last.npz", "batch"]),
    CliCase("ckpt-meta-version-unknown", _mutate(_set_meta(checkpoint_version=99)),
            ["last.npz", "version 99"]),
    CliCase("ckpt-meta-no-manifest", _mutate(_del_meta("arrays")), ["last.npz", "manifest"]),
    CliCase("ckpt-meta-acc-broken", _mutate(_acc_broken), ["last.npz", "accumulators"]),
    # batch > 0 without the data order (KeyError before)
    CliCase("ckpt-perm-missing", _mutate(_drop("run/perm", manifest_too=True)),
            ["last.npz", "data order", "run/perm"]),
    CliCase("ckpt-perm-wrong-length", _mutate(_replace("run/perm", np.arange(7))),
            ["last.npz", "permutation", "200"]),
    CliCase("ckpt-perm-float", _mutate(_replace("run/perm", np.zeros(200))),
            ["last.npz", "run/perm", "integers"]),
    CliCase("ckpt-perm-repeated", _mutate(_replace("run/perm", np.zeros(200, dtype=np.int64))),
            ["last.npz", "permutation"]),
    # the optimizer's moments missing or of the wrong shape (issue 11 item 3)
    CliCase("ckpt-moments-missing", _mutate(_drop("optim/m/", manifest_too=False)),
            ["last.npz", "lacks", "optim/m/"]),
    CliCase("ckpt-moments-missing-unlisted", _mutate(_drop("optim/m/", manifest_too=True)),
            ["last.npz", "'m' moments"]),
    CliCase("ckpt-second-moments-missing-unlisted", _mutate(_drop("optim/v/", manifest_too=True)),
            ["last.npz", "'v' moments"]),
    CliCase("ckpt-moment-shape-unlisted", _mutate(_reshape("optim/m/", manifest_too=True)),
            ["last.npz", "optim/m/", "shape"]),
    CliCase("ckpt-moment-shape-vs-manifest", _mutate(_reshape("optim/v/", manifest_too=False)),
            ["last.npz", "optim/v/", "lists"]),
    CliCase("ckpt-optimizer-other-class", _mutate(_replace("optim/optimizer", "SGD")),
            ["last.npz", "optimizer", "SGD"]),
    # the model's entries
    CliCase("ckpt-model-entry-missing", _mutate(_drop("model/1.", manifest_too=True)),
            ["last.npz", "missing"]),
    CliCase("ckpt-model-shape", _mutate(_reshape("model/", manifest_too=True)),
            ["last.npz", "shape"]),
    # the stored configuration
    CliCase("ckpt-config-unknown-key", _mutate(_config_change(colour="red")),
            ["last.npz", "configuration", "colour"]),
    CliCase("ckpt-config-bad-value", _mutate(_config_change(batch_size=0)),
            ["last.npz", "batch_size", ">= 1"]),
    # not a checkpoint at all
    CliCase("ckpt-garbage", _mutate(_garbage), ["last.npz", "not a readable"]),
    CliCase("ckpt-truncated", _truncated(), ["last.npz", "not a readable"]),
    CliCase("ckpt-empty-file", _empty, ["last.npz", "not a readable"]),
    CliCase("ckpt-last-is-directory", _last_is_dir, ["last.npz", "directory"]),
    # resume with other settings: refused, listing them (issue 15.10)
    CliCase("ckpt-resume-other-epochs", _resume_with("done", "--epochs", "100"),
            ["last.npz", "other settings", "epochs 100", "stored: 2", "--extend-epochs"]),
    CliCase("ckpt-resume-other-hidden-and-seed", _resume_with("mid", "--hidden", "32", "--seed", "9"),
            ["hidden 32", "stored: 16", "seed 9", "stored: 3"]),
    CliCase("ckpt-resume-other-dataset", _resume_with("mid", "--dataset", "mnist"),
            ["dataset 'mnist'", "stored: 'sample'"]),
    # Python API
    Case("ckpt-py-load-missing", _py_load_missing, FileNotFoundError, ["nope.npz", "no such file"]),
    Case("ckpt-py-resume-other-settings", _py_resume_other_settings, ValueError,
         ["last.npz", "epochs 5", "stored: 2"]),
    Case("ckpt-py-extend-without-resume", _py_extend_fresh, ValueError, ["extend_epochs", "resume"]),
    Case("ckpt-py-resume-unknown-setting", _py_resume_config_unknown_key, ValueError, ["epochz"]),
]
