"""Every ```python block of docs/*.md runs, in order, like the cells of a notebook.

Blocks of one file share one namespace (a later block sees the names of an earlier one);
each file starts from a fresh namespace.  A block may ``assert``; a failing block is
reported with its file, its index (1-based) and the line of the Markdown file where it
starts, and the traceback points at lines of the ``.md`` file itself.  ```text blocks
(printed output shown to the reader) are not run.

Blocks run in a temporary working directory, so a doc that writes files leaves nothing
in the tree.
"""

import pathlib
import re
import time
import traceback

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# a fence at the start of a line: ```python ... ``` (the info string may carry more words)
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def doc_files():
    return sorted(DOCS.glob("*.md"))


def runnable_files():
    """docs/*.md and the project README (its examples are tests too)."""
    return doc_files() + [ROOT / "README.md"]


def python_blocks(path):
    """[(index, first_line, source)] of the ```python blocks of ``path``, in order."""
    text = path.read_text(encoding="utf-8")
    out = []
    for i, m in enumerate(FENCE.finditer(text), start=1):
        first_line = text.count("\n", 0, m.start(1)) + 1
        out.append((i, first_line, m.group(1)))
    return out


def run_doc(path):
    """Run the blocks of ``path`` in one namespace; returns the seconds each took."""
    namespace = {"__name__": f"docs.{path.stem}"}
    times = []
    for index, line, source in python_blocks(path):
        # pad with newlines so that tracebacks give the line numbers of the .md file
        code = compile("\n" * (line - 1) + source, str(path), "exec")
        t0 = time.perf_counter()
        try:
            exec(code, namespace)
        except Exception as exc:  # report where, then fail
            tb = traceback.format_exc()
            pytest.fail(f"{path.name}: block {index} (starting at line {line}) raised "
                        f"{type(exc).__name__}: {exc}\n\n{tb}", pytrace=False)
        times.append(time.perf_counter() - t0)
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
    """Links to files of the repository point at files that exist (pictures under
    docs/img/ are generated from a training run and may be missing in a fresh tree)."""
    text = path.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if "://" in target or target.startswith("mailto:") or target.startswith("img/"):
            continue
        assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


def test_unclosed_fences():
    for path in doc_files():
        fences = [ln for ln in path.read_text(encoding="utf-8").splitlines()
                  if ln.startswith("```")]
        assert len(fences) % 2 == 0, f"{path.name}: an unclosed ``` fence"
