"""Benchmark session set-up: torch on one CPU thread (``SPIKEREG_BENCH_THREADS`` to change it)
for every case, like ``benchmark accuracy``'s default; restored after each module."""
import os

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("SPIKEREG_BENCH_THREADS", "1")))
    yield
    torch.set_num_threads(old)
