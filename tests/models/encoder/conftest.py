"""Encoder tests run tiny models: one intra-op thread is much faster than two on the shared 2-core box
(thread spin-waiting dominates such small ops). Restored after each test so other directories are unaffected."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
