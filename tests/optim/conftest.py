"""One torch thread for the optimizer tests: their tensors are tiny, and extra threads on
a shared 2-core machine only add contention (restored afterwards)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
