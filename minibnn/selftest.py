"""``minibnn selftest``: the kernel properties, checked on this machine, from an installed
package.

The tests of ``tests/`` live in the source checkout; a kernel developer or a GPU user
with minibnn installed from a wheel has no way to run them.  :func:`main_selftest` runs
the central properties of the kernel suite with hypothesis, on the backends asked for,
against the slow NumPy references (:mod:`minibnn.kernels.reference`):

===================  =================================================================
property             checked against
===================  =================================================================
pack                 ``reference.pack`` bit for bit; ``unpack(pack(x)) == sign(x)``
xnor_gemm            float ``sign(a) @ sign(b).T``, exactly (int32)
xnor_gemm prepared   the same through ``prepare_weights`` (the layers' path)
binary_matmul        float ``sign(a) @ sign(b)``, exactly
binary_conv2d        naive zero-padded float cross-correlation of the signs, exactly
packed MLP           ``PackedModel`` scores == the float model's eval scores, bit for bit
                     (random BN with negative / zero gamma and ties on integers)
===================  =================================================================

The strategies and checkers are those of :mod:`minibnn.testing` (shapes bounded, K
around word boundaries, exact zeros so that sign(0) = +1 is exercised), so a selftest
failure is a failure of the test suite too.  It prints one table row per property and
backend and, for a failing property, hypothesis' shrunk (smallest) counterexample.

hypothesis is needed (``pip install 'minibnn[selftest]'`` or ``pip install hypothesis``);
without it :func:`main_selftest` raises ``RuntimeError`` saying so.
"""

import importlib.util
import sys
import time

import numpy as np

from .checks import check_choice, check_int

#: the ``--backend`` choices: one kernel backend, or every available one but the oracle
BACKEND_CHOICES = ("cpu", "cuda", "all")
#: kernel backends "all" tries, in order ("reference" is the oracle, not checked)
CHECKED_BACKENDS = ("cpu", "cuda")
HYPOTHESIS_MISSING = ("minibnn selftest needs hypothesis: pip install 'minibnn[selftest]' "
                      "(or pip install hypothesis)")


# ---------------------------------------------------------------------------
# the properties: (name, strategy factory, check(case, backend))
# ---------------------------------------------------------------------------

def _random_mlp(seed, in_features, hidden, n_classes, backend):
    """A small binary MLP whose BN layers have negative, zero and positive gamma and
    integer running means with beta = 0 (BN exactly 0 on an integer sum: a tie)."""
    from .layers import BatchNorm, BinaryDense, Flatten, SignActivation
    from .model import Sequential

    rng = np.random.default_rng(seed)
    layers = [Flatten(), BinaryDense(in_features, hidden, binary_input=False, backend=backend,
                                     rng=rng),
              BatchNorm(hidden), SignActivation(),
              BinaryDense(hidden, hidden, backend=backend, rng=rng), BatchNorm(hidden),
              SignActivation(), BinaryDense(hidden, n_classes, backend=backend, rng=rng),
              BatchNorm(n_classes)]
    for layer in layers:
        if isinstance(layer, BatchNorm):
            f = layer.num_features
            layer.params["gamma"][:] = rng.choice([-2.0, -0.7, 0.0, 0.05, 0.6, 1.5], f)
            beta = rng.choice([0.0, 0.3, -0.45, 1.0], f)
            beta[rng.random(f) < 0.4] = 0.0
            layer.params["beta"][:] = beta
            layer.buffers["running_mean"][:] = rng.integers(-6, 7, f)
            layer.buffers["running_var"][:] = rng.choice([0.25, 1.0, 4.0, 37.0], f)
    return Sequential(layers)


def _mlp_cases():
    from hypothesis import strategies as st

    return st.tuples(st.integers(0, 2 ** 31 - 1), st.integers(1, 90), st.integers(1, 70),
                     st.integers(2, 10), st.integers(1, 20))


def _pack_cases():
    """(M, K) real arrays, K around word boundaries."""
    from hypothesis import strategies as st

    from . import testing as T

    return st.tuples(st.integers(1, 5), T.k_values()).flatmap(T.real_arrays)


def _check_packed_mlp(case, backend):
    from .packed import PackedModel

    seed, in_features, hidden, n_classes, n = case
    model = _random_mlp(seed, in_features, hidden, n_classes, backend)
    pixels = np.random.default_rng(seed + 1).integers(0, 256, (n, in_features))
    x = (2.0 * pixels / 255.0 - 1.0).astype(np.float32)
    want = model.forward(x, training=False)
    got = PackedModel.from_model(model, first_layer="float", backend=backend).scores(x)
    assert got.shape == want.shape and got.dtype == want.dtype, \
        f"packed scores {got.shape} {got.dtype} != float model {want.shape} {want.dtype}"
    if not np.array_equal(got, want):
        bad = int(np.argwhere(got != want)[0][0])
        raise AssertionError(f"packed scores differ from the float model's (first at sample "
                             f"{bad}: {got[bad]} != {want[bad]})")


def _properties():
    from . import testing as T

    return [
        ("pack", _pack_cases, lambda x, b: T.check_pack_roundtrip(x, backend=b)),
        ("xnor_gemm", T.gemm_operands, lambda ab, b: T.check_xnor_gemm(*ab, backend=b)),
        ("xnor_gemm prepared", T.gemm_operands,
         lambda ab, b: T.check_xnor_gemm(*ab, backend=b, prepared=True)),
        ("binary_matmul", T.gemm_operands,
         lambda ab, b: T.check_binary_matmul(ab[0], ab[1].T.copy(), backend=b)),
        ("binary_conv2d", T.conv_cases,
         lambda c, b: T.check_binary_conv2d(*c, backend=b)),
        ("packed MLP", _mlp_cases, _check_packed_mlp),
    ]


PROPERTY_NAMES = ("pack", "xnor_gemm", "xnor_gemm prepared", "binary_matmul",
                  "binary_conv2d", "packed MLP")


# ---------------------------------------------------------------------------
# running one property
# ---------------------------------------------------------------------------

def _describe(value, limit=400):
    """A short text for a counterexample: arrays by shape and dtype, and their values
    when small."""
    if isinstance(value, np.ndarray):
        text = f"array{value.shape} {value.dtype}"
        if value.size <= 24:
            text += " " + np.array2string(value, separator=", ", threshold=24).replace("\n", "")
        return text
    if isinstance(value, tuple):
        return "(" + ", ".join(_describe(v, limit) for v in value) + ")"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def run_property(check, strategy, backend, examples, seed=None):
    """Run ``check(case, backend)`` on ``examples`` cases drawn from ``strategy`` (a
    hypothesis strategy).  Returns ``(passed, counterexample, error)``: ``None, None``
    when it passed, else the shrunk case (as drawn) and the exception it raised."""
    from hypothesis import HealthCheck, Verbosity, given, seed as hseed, settings

    failure = {}

    # hypothesis replays the shrunk example last: the last failure recorded is it
    @settings(max_examples=examples, deadline=None, database=None, verbosity=Verbosity.quiet,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(strategy)
    def prop(case):
        try:
            check(case, backend)
        except Exception as exc:
            failure["case"], failure["error"] = case, exc
            raise

    if seed is not None:
        prop = hseed(seed)(prop)
    try:
        prop()
    except BaseException as exc:  # noqa: BLE001 -- an ExceptionGroup when several bugs
        if isinstance(exc, KeyboardInterrupt):
            raise
        if not failure:               # hypothesis itself failed (e.g. a health check)
            return False, None, exc
        return False, failure["case"], failure["error"]
    return True, None, None


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------

def _backends_to_check(backend):
    """[(name, None or the reason it is unavailable)]."""
    from .kernels.backend import BackendUnavailable, get_backend

    names = CHECKED_BACKENDS if backend == "all" else (backend,)
    out = []
    for name in names:
        try:
            get_backend(name)
        except BackendUnavailable as exc:
            if backend != "all":
                raise                                    # asked for by name: an error
            out.append((name, str(exc)))
            continue
        out.append((name, None))
    return out


def main_selftest(backend="cpu", examples=100, stream=None, seed=None, properties=None):
    """Run the kernel properties on ``backend`` ("cpu", "cuda" or "all": every available
    one) with ``examples`` hypothesis examples each; print a table to ``stream``
    (default ``sys.stdout``).  Returns 0 if every property passed, else 1.

    ``seed``: an int to make the draws reproducible (default: random, as hypothesis is).
    ``properties``: names from :data:`PROPERTY_NAMES` to run (default: all).
    Raises ``ValueError`` for a bad argument, ``RuntimeError`` if hypothesis is not
    installed, :class:`minibnn.kernels.BackendUnavailable` if the one backend asked for
    cannot run here (with "all", unavailable backends are listed and skipped).
    """
    stream = sys.stdout if stream is None else stream
    check_choice(backend, "backend", BACKEND_CHOICES)
    examples = check_int(examples, "examples", minimum=1)
    if seed is not None:
        seed = check_int(seed, "seed", minimum=0)
    if properties is not None:
        properties = [check_choice(p, "property", PROPERTY_NAMES) for p in properties]
    if importlib.util.find_spec("hypothesis") is None:
        raise RuntimeError(HYPOTHESIS_MISSING)

    from . import __version__ as version

    backends = _backends_to_check(backend)
    props = [p for p in _properties() if properties is None or p[0] in properties]
    print(f"minibnn {version} selftest: {examples} examples per property, "
          f"numpy {np.__version__}", file=stream)
    width = max(len(p[0]) for p in props)
    failures = 0
    ran = 0
    for name, reason in backends:
        if reason is not None:
            print(f"  {name:<6} {'(all)':<{width}}  SKIPPED  unavailable: {reason}", file=stream)
            continue
        for prop_name, strategy, check in props:
            t0 = time.perf_counter()
            ok, case, error = run_property(check, strategy(), name, examples, seed)
            dt = time.perf_counter() - t0
            ran += 1
            status = "passed" if ok else "FAILED"
            print(f"  {name:<6} {prop_name:<{width}}  {status}  {dt:6.1f} s", file=stream)
            if not ok:
                failures += 1
                message = " ".join(str(error).split())
                if len(message) > 600:
                    message = message[:600] + "..."
                print(f"      error: {type(error).__name__}: {message}", file=stream)
                if case is not None:
                    print(f"      smallest counterexample: {_describe(case)}", file=stream)
    if ran == 0:
        print("no backend could be checked", file=stream)
        return 1
    print(f"{ran - failures} of {ran} passed" + ("" if not failures else
          f"; {failures} FAILED"), file=stream)
    return 0 if failures == 0 else 1
