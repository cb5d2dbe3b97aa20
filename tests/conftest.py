"""Hypothesis profiles and shared fixtures.

Profiles (select with ``HYPOTHESIS_PROFILE=...``; default ``ci``):

* ``ci`` -- derandomized and bounded by the number of examples, for the 2-core CI machine
  (no per-example deadline: a shared CI core can stall one example for seconds).
* ``fuzz`` -- many random examples, no deadline: ``HYPOTHESIS_PROFILE=fuzz make test``.
* ``dev`` -- a quick local loop.
"""

from __future__ import annotations

import os

import matplotlib
import pytest
from hypothesis import HealthCheck, settings

matplotlib.use("Agg")

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=60,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz", max_examples=5000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=20, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def one_torch_thread():
    """Tiny models: one intra-op thread avoids OpenMP spin contention on busy machines.

    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``; the thread
    count is restored afterwards.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
