"""course_utils.device: selection order, errors, seeding, autocast, channels_last."""
import random

import numpy as np
import pytest
import torch
from torch import nn

from course_utils import device as dv


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(dv.ENV_VAR, raising=False)


def test_argument_wins_over_env(monkeypatch):
    monkeypatch.setenv(dv.ENV_VAR, "definitely-not-a-device")
    assert dv.get_device("cpu") == torch.device("cpu")
    assert dv.get_device(torch.device("cpu")) == torch.device("cpu")


def test_env_var_is_used(monkeypatch):
    monkeypatch.setenv(dv.ENV_VAR, "CPU")
    assert dv.get_device() == torch.device("cpu")
    assert "COURSE_DEVICE=CPU" in dv.describe_device()


def test_bad_env_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(dv.ENV_VAR, "tpu")
    with pytest.raises(ValueError, match="COURSE_DEVICE.*'tpu'"):
        dv.get_device()


def test_bad_argument_value(no_env):
    with pytest.raises(ValueError, match="device argument.*'gpu0'"):
        dv.get_device("gpu0")
    with pytest.raises(ValueError, match="not supported"):
        dv.get_device("meta")


def test_unavailable_cuda_is_an_error(monkeypatch, no_env):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        dv.get_device("cuda")
    monkeypatch.setenv(dv.ENV_VAR, "cuda:0")
    with pytest.raises(RuntimeError, match="COURSE_DEVICE"):
        dv.get_device()


def test_unavailable_mps_is_an_error(monkeypatch, no_env):
    monkeypatch.setattr(dv, "_mps_available", lambda: False)
    with pytest.raises(RuntimeError, match="MPS is not available"):
        dv.get_device("mps")


def test_auto_order_falls_back_to_cpu(monkeypatch, no_env):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dv, "_mps_available", lambda: False)
    assert dv.get_device() == torch.device("cpu")
    assert dv.get_device("auto") == torch.device("cpu")
    monkeypatch.setenv(dv.ENV_VAR, "auto")
    assert dv.get_device() == torch.device("cpu")
    text = dv.describe_device()
    assert text.startswith("cpu (") and "automatic choice" in text


def test_auto_prefers_mps_over_cpu(monkeypatch, no_env):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dv, "_mps_available", lambda: True)
    assert dv.get_device() == torch.device("mps")


def _draw():
    return (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(),
            torch.randint(0, 1000, (4,)).tolist())


def test_seed_everything_reproducible():
    dv.seed_everything(123)
    a = _draw()
    dv.seed_everything(123)
    b = _draw()
    dv.seed_everything(124)
    c = _draw()
    assert a == b
    assert a != c


def test_seed_everything_deterministic_switch():
    try:
        dv.seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        # a warn-only switch set elsewhere is made strict, not left as it was
        torch.use_deterministic_algorithms(True, warn_only=True)
        dv.seed_everything(0, deterministic=True)
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        dv.seed_everything(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic


@pytest.mark.parametrize("bad", [1.5, "3", True, -1, 2**32])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises((TypeError, ValueError), match="seed"):
        dv.seed_everything(bad)


def test_autocast_is_noop_on_cpu():
    assert dv.amp_dtype("cpu", True) is None
    x = torch.randn(4, 4)
    with dv.autocast(torch.device("cpu"), enabled=True):
        y = x @ x
    assert y.dtype == torch.float32
    assert dv.amp_dtype("cuda", False) is None
    with pytest.raises(ValueError, match="dtype"):
        dv.amp_dtype("cuda", True, torch.float64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_autocast_lowers_precision_on_cuda():
    x = torch.randn(8, 8, device="cuda")
    with dv.autocast("cuda", enabled=True):
        y = x @ x
    assert y.dtype in (torch.bfloat16, torch.float16)
    with dv.autocast("cuda", enabled=True, dtype=torch.float16):
        assert (x @ x).dtype == torch.float16


def test_to_channels_last():
    conv = nn.Conv2d(3, 4, 3)
    out = dv.to_channels_last(conv)
    assert out is conv and conv.weight.is_contiguous(memory_format=torch.channels_last)
    t = dv.to_channels_last(torch.randn(2, 3, 5, 5))
    assert t.is_contiguous(memory_format=torch.channels_last)
    flat = torch.randn(2, 3)
    assert dv.to_channels_last(flat) is flat
    with pytest.raises(TypeError, match="nn.Module or a torch.Tensor"):
        dv.to_channels_last([1, 2])
