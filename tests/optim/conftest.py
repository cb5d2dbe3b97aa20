"""One torch thread for the optimizer tests: their tensors are tiny, and extra threads on
a shared 2-core machine only add contention (the shared ``one_torch_thread`` fixture of
``tests/conftest.py``, restored afterwards)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    yield
