"""The device/threads helper: one device choice and the thread limits of every layer."""
from __future__ import annotations

import pytest
import torch

from neuralgraph import device as D


def test_cpu_is_always_cpu():
    assert D.choose_device("cpu").type == "cpu"
    assert not D.cuda_wanted("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_cuda_without_a_gpu_is_an_error_for_training_and_a_fallback_for_analysis():
    with pytest.raises(D.DeviceUnavailableError, match="training.device = 'cuda'"):
        D.choose_device("cuda")
    assert D.choose_device("cuda", strict=False).type == "cpu"
    assert D.choose_device("auto").type == "cpu"


def test_thread_environment_sets_every_pool_variable():
    assert D.thread_environment(3) == {name: "3" for name in D.THREAD_ENV_VARS}


def test_torch_threads_restores_the_previous_count():
    before = torch.get_num_threads()
    with D.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
