"""Bad command lines: flags out of range, unknown names, bad paths (ids ``cli-``).

Each row runs ``python -m minibnn ...`` in a subprocess and expects one line
``minibnn CMD: error: ...`` naming the flag or the file (see ``bad_inputs/__init__.py``).
Rows that need a trained run or a crafted checkpoint are in ``rows_checkpoint.py``.
"""

import numpy as np

from bad_inputs import Case, CliCase

TRAIN = ["train", "--dataset", "sample", "--hidden", "16", "--depth", "1", "--epochs", "1",
         "--batch-size", "100", "--limit-train", "200", "--no-progress"]


def _train(*extra, out="run"):
    return [*TRAIN, "--out", out, *extra]


def _file(name, data):
    def argv(tmp_path):
        p = tmp_path / name
        p.write_bytes(data)
        return p
    return argv


def _model_npz(tmp_path):
    from minibnn import zoo
    path = tmp_path / "model.npz"
    zoo.build("mnist_mlp", hidden=16, depth=1, seed=0).save(path)
    return path


def _out_is_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    return _train(out=str(tmp_path / "afile"))


def _out_below_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    return _train(out=str(tmp_path / "afile" / "run"))


def _export_out_dir(tmp_path):
    (tmp_path / "outdir").mkdir()
    return ["export", _model_npz(tmp_path), "--out", tmp_path / "outdir"]


def _export_bad_shape(shape):
    def argv(tmp_path):
        return ["export", _model_npz(tmp_path), "--out", tmp_path / "m.bnn", "--input-shape", shape]
    return argv


def _plot_empty(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    return ["plot", tmp_path / "run"]


def _eval_bad_model(tmp_path):
    return ["eval", _file("m.bnn", b"not a model")(tmp_path), "--dataset", "sample"]


def _eval_dir(tmp_path):
    (tmp_path / "m.bnn").mkdir()
    return ["eval", tmp_path / "m.bnn", "--dataset", "sample"]


def _summary_garbage(tmp_path):
    return ["summary", _file("m.npz", np.random.default_rng(0).bytes(300))(tmp_path)]


def _summary_dir(tmp_path):
    (tmp_path / "m.npz").mkdir()
    return ["summary", tmp_path / "m.npz"]


def _export_garbage(tmp_path):
    return ["export", _file("m.npz", b"PK\x03\x04 truncated")(tmp_path), "--out", tmp_path / "m.bnn"]


def _config(**kw):
    from minibnn.train import TrainConfig
    base = dict(dataset="sample", hidden=16, depth=1, epochs=1, batch_size=100, limit_train=200)
    base.update(kw)
    return TrainConfig(**base)


def _py_train(**kw):
    def call(tmp_path):
        from minibnn.train import train
        return train(_config(**kw), tmp_path / "run", progress=False, log=lambda *a: None)
    return call


def _py_train_dict(tmp_path):
    from minibnn.train import train
    return train({"epochs": 1}, tmp_path / "run", progress=False, log=lambda *a: None)


ROWS = [
    # -- train: numbers out of range (issue 11 item 4), one line naming the flag
    CliCase("cli-train-batch-size-negative", _train("--batch-size", "-5"), ["--batch-size", ">= 1", "-5"]),
    CliCase("cli-train-batch-size-zero", _train("--batch-size", "0"), ["--batch-size", ">= 1"]),
    CliCase("cli-train-batch-size-not-int", _train("--batch-size", "ten"), ["--batch-size", "integer"]),
    CliCase("cli-train-epochs-negative", _train("--epochs", "-2"), ["--epochs", ">= 1"]),
    CliCase("cli-train-epochs-zero", _train("--epochs", "0"), ["--epochs", ">= 1"]),
    CliCase("cli-train-seed-negative", _train("--seed", "-1"), ["--seed", ">= 0"]),
    CliCase("cli-train-seed-float", _train("--seed", "1.5"), ["--seed", "integer"]),
    CliCase("cli-train-hidden-zero", _train("--hidden", "0"), ["--hidden", ">= 1"]),
    CliCase("cli-train-depth-zero", _train("--depth", "0"), ["--depth", ">= 1"]),
    CliCase("cli-train-width-zero", _train("--width", "0"), ["--width", "> 0"]),
    CliCase("cli-train-lr-start-zero", _train("--lr-start", "0"), ["--lr-start", "> 0"]),
    CliCase("cli-train-lr-start-inf", _train("--lr-start", "inf"), ["--lr-start", "finite"]),
    CliCase("cli-train-lr-end-nan", _train("--lr-end", "nan"), ["--lr-end", "finite"]),
    CliCase("cli-train-lr-end-text", _train("--lr-end", "small"), ["--lr-end", "number"]),
    CliCase("cli-train-dropout-in-one", _train("--dropout-in", "1"), ["--dropout-in", "< 1"]),
    CliCase("cli-train-dropout-hidden-negative", _train("--dropout-hidden", "-0.1"),
            ["--dropout-hidden", ">= 0"]),
    CliCase("cli-train-limit-train-zero", _train("--limit-train", "0"), ["--limit-train", ">= 1"]),
    CliCase("cli-train-extend-epochs-zero", _train("--resume", "--extend-epochs", "0"),
            ["--extend-epochs", ">= 1"]),
    # -- train: names not in the registry
    CliCase("cli-train-dataset-unknown", _train("--dataset", "imagenet"), ["--dataset", "imagenet", "sample"]),
    CliCase("cli-train-optimizer-unknown", _train("--optimizer", "lion"), ["--optimizer", "lion", "adam"]),
    CliCase("cli-train-schedule-unknown", _train("--schedule", "cosine"), ["--schedule", "cosine"]),
    CliCase("cli-train-loss-unknown", _train("--loss", "mse"), ["--loss", "mse"]),
    CliCase("cli-train-arch-unknown", _train("--arch", "resnet"), ["--arch", "resnet"]),
    CliCase("cli-train-bn-unknown", _train("--bn", "group"), ["--bn", "group"]),
    CliCase("cli-train-backend-unknown", _train("--backend", "tpu"), ["--backend", "tpu"]),
    CliCase("cli-train-grad-dtype-unknown", _train("--grad-dtype", "float16"),
            ["--grad-dtype", "float16", "bfloat16"]),
    CliCase("cli-train-grad-dtype-bfloat16-on-cuda",
            _train("--grad-dtype", "bfloat16", "--backend", "cuda"), ["cuda"]),
    # -- train: the run directory and resume
    CliCase("cli-train-out-missing", TRAIN, ["--out", "required"]),
    CliCase("cli-train-out-is-file", _out_is_file, ["run directory", "afile", "not a directory"]),
    CliCase("cli-train-out-below-file", _out_below_file, ["run directory", "afile", "is a file"]),
    CliCase("cli-train-resume-no-checkpoint", _train("--resume"), ["no checkpoint", "last.npz"]),
    CliCase("cli-train-extend-without-resume", _train("--extend-epochs", "3"),
            ["--extend-epochs", "--resume"]),
    CliCase("cli-train-batch-larger-than-data", _train("--limit-train", "50"),
            ["batch size 100", "larger", "50"]),
    # -- eval
    CliCase("cli-eval-limit-negative", ["eval", "m.bnn", "--dataset", "sample", "--limit", "-5"],
            ["--limit", ">= 1"]),
    CliCase("cli-eval-limit-zero", ["eval", "m.bnn", "--dataset", "sample", "--limit", "0"],
            ["--limit", ">= 1"]),
    CliCase("cli-eval-batch-size-zero", ["eval", "m.bnn", "--dataset", "sample", "--batch-size", "0"],
            ["--batch-size", ">= 1"]),
    CliCase("cli-eval-dataset-unknown", ["eval", "m.bnn", "--dataset", "nope"], ["--dataset", "nope"]),
    CliCase("cli-eval-model-missing", ["eval", "nope.bnn", "--dataset", "sample"],
            ["nope.bnn", "no such file"]),
    CliCase("cli-eval-model-directory", _eval_dir, ["m.bnn", "directory"]),
    CliCase("cli-eval-model-not-bnn", _eval_bad_model, ["m.bnn", "not a readable"]),
    # -- export
    CliCase("cli-export-out-is-directory", _export_out_dir, ["--out", "outdir", "directory"]),
    CliCase("cli-export-model-missing", ["export", "nope.npz", "--out", "m.bnn"],
            ["nope.npz", "no such file"]),
    CliCase("cli-export-model-garbage", _export_garbage, ["m.npz"]),
    CliCase("cli-export-input-shape-bad", _export_bad_shape("1,x"), ["--input-shape", "1,x"]),
    CliCase("cli-export-input-shape-zero", _export_bad_shape("0,28,28"), ["--input-shape", "positive"]),
    # -- summary
    CliCase("cli-summary-missing", ["summary", "nope.npz"], ["nope.npz", "no such file"]),
    CliCase("cli-summary-garbage", _summary_garbage, ["m.npz", "not a readable"]),
    CliCase("cli-summary-directory", _summary_dir, ["m.npz", "directory"]),
    # -- plot
    CliCase("cli-plot-missing-run", ["plot", "nowhere"], ["metrics.jsonl", "nowhere"]),
    CliCase("cli-plot-empty-metrics", _plot_empty, ["metrics.jsonl", "empty"]),
    # -- the same checks at the Python boundary (TrainConfig.validated)
    Case("cli-config-batch-size-zero", _py_train(batch_size=0), ValueError, ["batch_size", ">= 1"]),
    Case("cli-config-epochs-negative", _py_train(epochs=-2), ValueError, ["epochs", ">= 1"]),
    Case("cli-config-seed-negative", _py_train(seed=-1), ValueError, ["seed", ">= 0"]),
    Case("cli-config-optimizer-unknown", _py_train(optimizer="lion"), ValueError, ["optimizer", "lion"]),
    Case("cli-config-dataset-unknown", _py_train(dataset="imagenet"), ValueError, ["dataset", "imagenet"]),
    Case("cli-config-hidden-float", _py_train(hidden=1.5), TypeError, ["hidden", "integer"]),
    Case("cli-config-lr-nan", _py_train(lr_start=float("nan")), ValueError, ["lr_start", "finite"]),
    Case("cli-config-not-a-config", _py_train_dict, TypeError, ["TrainConfig"]),
]
