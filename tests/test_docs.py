"""Every ```python block of docs/*.md runs, in order, like the cells of a notebook, and
prints what the page says it prints.

Blocks of one file share one namespace (a later block sees the names of an earlier one);
each file starts from a fresh namespace and from NumPy's default print options (a page
that calls ``np.set_printoptions`` does not change the next page's output).  A block may
``assert``; a failing block is reported with its file, its index (1-based) and the line
of the Markdown file where it starts, and the traceback points at lines of the ``.md``
file itself.

Printed output (the convention, also stated at the top of docs/README.md):

* a ```text block that follows a ```python block with only blank lines between them is
  that block's expected standard output; it is compared with what the block prints,
  exactly, after stripping trailing whitespace from each line and trailing blank lines,
  and a difference fails with a diff;
* a block that prints nothing has no such block after it, and a block that prints
  something must have one (so no output shown to the reader can drift);
* a ```text block anywhere else (after prose), and one written ```text not-output, is
  not output (a shell session, a quote of source code) and is not compared.

Blocks run in a temporary working directory, so a doc that writes files leaves nothing
in the tree.
"""

import contextlib
import difflib
import io
import pathlib
import re
import time
import traceback

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# any fence at the start of a line: ```INFO ... ``` (INFO: the language, then flags)
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# NumPy's documented defaults: every page starts from them
DEFAULT_PRINTOPTIONS = dict(edgeitems=3, threshold=1000, floatmode="maxprec", precision=8,
                            suppress=False, linewidth=75, nanstr="nan", infstr="inf",
                            sign="-", formatter=None, legacy=False)


def doc_files():
    return sorted(DOCS.glob("*.md"))


def runnable_files():
    """docs/*.md and the project README (its examples are tests too)."""
    return doc_files() + [ROOT / "README.md"]


def blocks(path):
    """[(index, first_line, source, expected)] of the ```python blocks of ``path``, in
    order; ``expected`` is the text of the ```text block right after it (only blank
    lines between), or None."""
    text = path.read_text(encoding="utf-8")
    fences = list(FENCE.finditer(text))
    out = []
    index = 0
    for i, m in enumerate(fences):
        if m.group(1).split()[:1] != ["python"]:
            continue
        index += 1
        first_line = text.count("\n", 0, m.start(2)) + 1
        expected = None
        if i + 1 < len(fences):
            nxt = fences[i + 1]
            info = nxt.group(1).split()
            if (info == ["text"] and not text[m.end():nxt.start()].strip()):
                expected = (text.count("\n", 0, nxt.start(2)) + 1, nxt.group(2))
        out.append((index, first_line, m.group(2), expected))
    return out


def python_blocks(path):
    """[(index, first_line, source)] of the ```python blocks of ``path``, in order."""
    return [(i, line, src) for i, line, src, _ in blocks(path)]


def _normalize(text):
    return "\n".join(line.rstrip() for line in text.splitlines()).rstrip("\n")


def output_mismatch(path, index, line, got, expected):
    """None if the printed ``got`` matches the ``expected`` (line, text) block, else a
    message with a diff."""
    got = _normalize(got)
    if expected is None:
        if not got:
            return None
        return (f"{path.name}: block {index} (line {line}) prints output but no ```text block "
                f"follows it; add one with exactly:\n{got}")
    want_line, want = expected
    want = _normalize(want)
    if got == want:
        return None
    diff = "\n".join(difflib.unified_diff(want.splitlines(), got.splitlines(),
                                          f"{path.name}:{want_line} (shown in the doc)",
                                          "printed by the block", lineterm=""))
    return (f"{path.name}: block {index} (line {line}) printed something else than the "
            f"```text block at line {want_line}:\n{diff}")


def run_doc(path, compare=True, namespace=None):
    """Run the blocks of ``path`` in one fresh namespace (or in ``namespace``, a dict
    the caller can inspect afterwards) with NumPy's default print options (restored
    afterwards); returns the seconds each took.  With ``compare``, each block's printed
    output must match the ```text block after it."""
    if namespace is None:
        namespace = {}
    namespace.setdefault("__name__", f"docs.{path.stem}")
    times = []
    saved = np.get_printoptions()
    np.set_printoptions(**DEFAULT_PRINTOPTIONS)
    try:
        for index, line, source, expected in blocks(path):
            # pad with newlines so that tracebacks give the line numbers of the .md file
            code = compile("\n" * (line - 1) + source, str(path), "exec")
            printed = io.StringIO()
            t0 = time.perf_counter()
            try:
                with contextlib.redirect_stdout(printed):
                    exec(code, namespace)
            except Exception as exc:  # report where, then fail
                tb = traceback.format_exc()
                pytest.fail(f"{path.name}: block {index} (starting at line {line}) raised "
                            f"{type(exc).__name__}: {exc}\n\nprinted so far:\n"
                            f"{printed.getvalue()}\n{tb}", pytrace=False)
            times.append(time.perf_counter() - t0)
            problem = output_mismatch(path, index, line, printed.getvalue(), expected) \
                if compare else None
            if problem:
                pytest.fail(problem, pytrace=False)
    finally:
        np.set_printoptions(**saved)
    return times


@pytest.mark.parametrize("path", runnable_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    times = run_doc(path)
    if path.parent == DOCS and path.name != "README.md":
        assert times, f"{path.name} has no ```python block"
    if path == ROOT / "README.md":
        assert len(times) >= 2, "the project README lost its runnable examples"


def test_docs_exist():
    names = {p.name for p in doc_files()}
    for want in ("README.md", "01_forward_in_bits.md", "02_why_a_sign_can_be_trained.md",
                 "03_backward_layer_by_layer.md", "04_batchnorm_shift_and_adamax.md",
                 "05_training_to_deployment.md"):
        assert want in names, f"docs/{want} is missing"


def test_index_lists_every_chapter():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for p in doc_files():
        if p.name != "README.md":
            assert f"({p.name})" in index, f"docs/README.md does not link {p.name}"


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.name)
def test_relative_links_resolve(path):
    """Links to files of the repository point at files that exist (the pictures of
    docs/img/ included: they are kept in the tree, with the scripts that draw them)."""
    text = path.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


def test_unclosed_fences():
    for path in doc_files():
        fences = [ln for ln in path.read_text(encoding="utf-8").splitlines()
                  if ln.startswith("```")]
        assert len(fences) % 2 == 0, f"{path.name}: an unclosed ``` fence"


# ---------------------------------------------------------------------------
# the output convention itself
# ---------------------------------------------------------------------------

def _page(tmp_path, body):
    path = tmp_path / "page.md"
    path.write_text(body, encoding="utf-8")
    return path


def test_printed_output_is_compared_with_a_diff(tmp_path):
    good = _page(tmp_path, "```python\nprint(1 + 1)\n```\n\n```text\n2   \n\n```\n")
    run_doc(good)
    bad = _page(tmp_path, "Intro.\n\n```python\nprint(1 + 2)\n```\n```text\n2\n```\n")
    with pytest.raises(pytest.fail.Exception, match=r"(?s)line 7.*-2\n\+3"):
        run_doc(bad)


def test_unshown_output_fails_and_prose_text_blocks_are_not_output(tmp_path):
    silent = _page(tmp_path, "```python\nprint('x')\n```\n\nSome prose.\n\n```text\nshell\n```\n")
    with pytest.raises(pytest.fail.Exception, match="no ```text block follows"):
        run_doc(silent)
    marked = _page(tmp_path, "```python\nx = 1\n```\n```text not-output\nquoted source\n```\n")
    run_doc(marked)
    assert blocks(marked)[0][3] is None


def test_each_page_starts_from_default_print_options(tmp_path):
    first = _page(tmp_path, "```python\nimport numpy as np\nnp.set_printoptions(precision=2)\n"
                            "print(np.array([1/3]))\n```\n```text\n[0.33]\n```\n")
    run_doc(first)
    second = tmp_path / "second.md"
    second.write_text("```python\nimport numpy as np\nprint(np.array([1/3]))\n```\n"
                      "```text\n[0.33333333]\n```\n", encoding="utf-8")
    run_doc(second)
    assert np.get_printoptions()["precision"] == DEFAULT_PRINTOPTIONS["precision"]


# ---------------------------------------------------------------------------
# the static figures (docs/img/make_figures.py)
# ---------------------------------------------------------------------------

def _make_figures():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_figures", DOCS / "img" / "make_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_graph_figure_shows_the_chapter_numbers(tmp_path, monkeypatch):
    """graph.png is drawn from make_figures.chapter3_values(): those are the numbers
    chapter 3 computes and prints."""
    monkeypatch.chdir(tmp_path)
    ns = {}
    run_doc(DOCS / "03_backward_layer_by_layer.md", compare=False, namespace=ns)
    values = _make_figures().chapter3_values()
    for name in ("x", "a1", "z1", "h1", "a2", "s", "dx", "da1", "dz1", "dh1", "da2", "ds",
                 "dW1", "dW2", "dgamma1", "dbeta1", "dgamma2", "dbeta2"):
        assert np.array_equal(values[name], ns[name]), name
    assert float(values["loss"]) == ns["loss"]


@pytest.mark.plot
def test_static_figures_draw(tmp_path):
    pytest.importorskip("matplotlib")
    paths = _make_figures().main(str(tmp_path))
    assert [pathlib.Path(p).name for p in paths] == ["sign_htanh.png", "graph.png"]
    for p in paths:
        assert pathlib.Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (DOCS / "img" / pathlib.Path(p).name).exists(), f"docs/img/{pathlib.Path(p).name} missing"


# ---------------------------------------------------------------------------
# the pictures of a run (minibnn.viz, minibnn plot)
# ---------------------------------------------------------------------------

@pytest.fixture
def fake_run(tmp_path):
    """A run directory as `minibnn train` leaves it, for a tiny MLP, with made-up
    metrics: config.json, best.npz (the architecture) and two metrics rows."""
    import json

    from minibnn import stats, zoo

    model = zoo.build("mnist_mlp", hidden=16, depth=2, seed=3)
    model.save(str(tmp_path / "best.npz"))
    (tmp_path / "config.json").write_text(json.dumps({"seed": 3}))
    binary = [n for n, _p, _g, info in model.parameters() if info.get("binary")]
    sign_layers = [str(i) for i, l in enumerate(model.layers)
                   if type(l).__name__ == "SignActivation"]
    rows = []
    for epoch, lr in ((1, 3e-3), (2, 1e-3)):
        rows.append({"epoch": epoch, "lr": lr, "train_loss": 0.5 / epoch,
                     "train_error": 0.2 / epoch, "val_error": 0.1 / epoch,
                     "test_error": 0.11 / epoch, "seconds": 1.0, "elapsed": epoch,
                     "flip_ratio": {n: 0.3 / epoch for n in binary},
                     "ste_cancel": {k: 0.3 for k in sign_layers},
                     "latent_hist": {n: [epoch] * stats.HIST_BINS for n in binary}})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path, model, binary


def test_layers_are_named_as_a_reader_knows_them(fake_run):
    from minibnn import viz

    run, model, binary = fake_run
    names = viz.layer_names(viz.read_architecture(str(run)))
    dense = [names[n.split(".")[0]] for n in binary]
    assert dense == ["dense 1 (784->16)", "dense 2 (16->16)", "dense 3 (16->10)"]
    signs = sorted((k for k, v in names.items() if v.startswith("sign")), key=int)
    assert [names[k] for k in signs] == ["sign after dense 1", "sign after dense 2"]
    assert viz.layer_names(None) == {}


def test_epoch_zero_histogram_is_the_initial_model(fake_run):
    from minibnn import stats, viz

    run, model, binary = fake_run
    got = viz.initial_latent_histograms(str(run), binary, stats.HIST_BINS)
    params = {n: p for n, p, _g, _i in model.parameters()}
    for n in binary:
        want = np.histogram(params[n], bins=stats.HIST_BINS, range=(-1, 1))[0].tolist()
        assert got[n] == want, n


@pytest.mark.plot
def test_plots_are_drawn(fake_run):
    pytest.importorskip("matplotlib")
    from minibnn import viz

    run, _model, _binary = fake_run
    for path in (viz.plot_curves(str(run)), viz.plot_latent_histograms(str(run))):
        assert pathlib.Path(path).read_bytes()[:4] == b"\x89PNG"
    (run / "best.npz").unlink()               # no architecture: indices, no epoch 0
    assert viz.initial_latent_histograms(str(run), ["2.w"], 20) is None
    viz.plot_latent_histograms(str(run), out=str(run / "h.png"))
    viz.plot_curves(str(run), out=str(run / "c.png"))
