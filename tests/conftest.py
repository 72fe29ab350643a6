"""Shared pytest setup: hypothesis profiles and the backends every kernel test runs on.

Profiles (select with HYPOTHESIS_PROFILE): ``dev`` (default, quick), ``ci`` (the CI run:
more examples, derandomized so a CI failure reproduces), ``thorough`` (by hand).
"""

import os

import pytest
from hypothesis import HealthCheck, settings

from minibnn.kernels import available_backends

settings.register_profile("dev", max_examples=40, deadline=None)
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# every kernel property runs on every backend that works here; under
# NUMBA_ENABLE_CUDASIM=1 that includes "cuda" (the simulator)
BACKENDS = available_backends()


@pytest.fixture(params=BACKENDS, scope="session")
def backend(request):
    return request.param


@pytest.fixture(params=[b for b in BACKENDS if b != "reference"], scope="session")
def fast_backend(request):
    return request.param


@pytest.fixture(scope="module")
def fast_simulator_barriers():
    """Under Numba's CUDA simulator a block barrier is the main thread polling the
    block's Python threads; with the default 5 ms GIL switch interval each round waits
    for a switch.  A short interval makes simulated kernels several times faster (no
    effect on a real GPU).  Used by the device test modules."""
    import sys
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``plot`` need the optional ``plot`` extra: skip them, with the reason,
    where matplotlib is not installed (the README's test command installs only ``test``);
    CI installs the extra afterwards and runs ``pytest -m plot``."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        skip = pytest.mark.skip(reason="needs the optional plot extra: pip install -e '.[plot]'")
        for item in items:
            if item.get_closest_marker("plot") is not None:
                item.add_marker(skip)
