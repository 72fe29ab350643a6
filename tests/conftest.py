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
