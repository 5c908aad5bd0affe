"""Device choice, seeding, determinism, mixed precision and channels_last.

Every notebook calls :func:`get_device` instead of hard-coding ``"cuda"``, so the same
notebook runs on a laptop CPU, an Apple GPU (MPS) and a CUDA machine. The order is:

1. the ``device`` argument, if given;
2. the ``COURSE_DEVICE`` environment variable (``cpu``, ``cuda``, ``cuda:1``, ``mps`` or
   ``auto``), so a CI job or an instructor can force a device without editing notebooks;
3. CUDA, then MPS, then the CPU, whichever is available first.

Asking for a device that is not there is an error, not a silent fall-back to the CPU: a
run that is 50x slower than expected is harder to diagnose than an exception.
"""
from __future__ import annotations

import contextlib
import logging
import os

import torch
from torch import nn

from course_utils.seeding import seed_python_numpy
# thread settings for a shared CPU live in the framework-neutral course_utils.threads (course
# run gives them to its kernels without importing torch); they are part of this API too
from course_utils.threads import available_cpus, thread_env

__all__ = ["ENV_VAR", "get_device", "describe_device", "seed_everything", "autocast",
           "amp_dtype", "to_channels_last", "available_cpus", "thread_env"]

log = logging.getLogger(__name__)

#: environment variable that overrides automatic device selection
ENV_VAR = "COURSE_DEVICE"
_KNOWN_TYPES = ("cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _auto() -> tuple[torch.device, str]:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device()), "CUDA is available"
    if _mps_available():
        return torch.device("mps"), "no CUDA GPU; Apple MPS is available"
    return torch.device("cpu"), "no CUDA or MPS device found"


def _parse(value, source: str) -> torch.device:
    """Turn a user value into a torch.device and check that it exists."""
    try:
        dev = value if isinstance(value, torch.device) else torch.device(str(value).strip().lower())
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{source} = {value!r} is not a device name; use one of "
                         f"'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'") from exc
    if dev.type not in _KNOWN_TYPES:
        raise ValueError(f"{source} = {value!r}: device type {dev.type!r} is not supported by the "
                         f"course; use one of 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"{source} = {value!r} but no CUDA GPU is usable here (torch {torch.__version__}, "
                f"CUDA build {torch.version.cuda}); use 'cpu' or 'auto', or install a CUDA build "
                f"of torch on a machine with an NVIDIA GPU")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise RuntimeError(f"{source} = {value!r} but only {count} CUDA device(s) exist "
                               f"(cuda:0 .. cuda:{count - 1})")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    if dev.type == "mps" and not _mps_available():
        raise RuntimeError(f"{source} = {value!r} but Apple MPS is not available on this machine "
                           f"(it needs macOS 12.3+ on Apple silicon); use 'cpu' or 'auto'")
    return dev


def _choose(device=None) -> tuple[torch.device, str]:
    if device is not None and str(device).strip().lower() != "auto":
        return _parse(device, "device argument"), "requested by the device argument"
    env = os.environ.get(ENV_VAR, "").strip()
    if device is None and env and env.lower() != "auto":
        return _parse(env, f"environment variable {ENV_VAR}"), f"set by {ENV_VAR}={env}"
    dev, why = _auto()
    return dev, f"automatic choice: {why}"


def get_device(device=None) -> torch.device:
    """The device to train on: ``device`` if given, else ``$COURSE_DEVICE``, else the best
    available (CUDA, MPS, CPU). ``"auto"`` means automatic choice either way.

    Raises ``ValueError`` for a name that is not a device and ``RuntimeError`` for a device
    this machine does not have; both name where the value came from.
    """
    return _choose(device)[0]


def describe_device(device=None) -> str:
    """One line saying which device :func:`get_device` picks and why, e.g.
    ``"cuda:0 (NVIDIA H100 80GB HBM3, 79.1 GiB) - automatic choice: CUDA is available"``."""
    dev, why = _choose(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        what = f"{dev} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    elif dev.type == "mps":
        what = "mps (Apple GPU)"
    else:
        what = f"cpu ({torch.get_num_threads()} threads)"
    return f"{what} - {why}"


def seed_everything(seed: int, deterministic: bool | None = False) -> int:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA
    device) from one integer, so the same seed gives the same numbers.

    ``deterministic=True`` also asks torch for deterministic kernels
    (``torch.use_deterministic_algorithms``, cuDNN deterministic and no benchmark autotuning,
    and the cuBLAS workspace setting CUDA needs). On the CPU runs are already repeatable; on
    a GPU this trades speed for bit-identical reruns. ``False`` switches those settings off
    again; ``None`` leaves them as they are (``fit`` seeds this way, so it does not undo a
    determinism switch set by the notebook). Returns the seed. A seed that is not an int
    raises ``TypeError``, one outside ``0 <= seed < 2**32`` ``ValueError`` (both twins).
    """
    seed = seed_python_numpy(seed)  # TypeError / ValueError as on the Keras side
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic is None:
        log.debug("seeded python, numpy and torch with %d", seed)
        return seed
    want = bool(deterministic)
    if want:
        # cuBLAS reads this when its handle is created; it must be set before the first matmul
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # calling the switch imports torch._dynamo (about a second), so only flip it when it changes
    if (torch.are_deterministic_algorithms_enabled() != want
            or (want and torch.is_deterministic_algorithms_warn_only_enabled())):
        torch.use_deterministic_algorithms(want)
    torch.backends.cudnn.deterministic = want
    if want:
        torch.backends.cudnn.benchmark = False
    log.debug("seeded python, numpy and torch with %d (deterministic=%s)", seed, deterministic)
    return seed


def amp_dtype(device, enabled=True, dtype=None) -> torch.dtype | None:
    """The autocast dtype :func:`autocast` uses on ``device``, or ``None`` when mixed
    precision is off there. On CUDA: bfloat16 where the GPU supports it (no loss scaling
    needed), else float16 (needs a ``GradScaler``). Off on the CPU and MPS: CPU autocast is
    slower than float32 for the course's models and MPS support varies by macOS version."""
    if not enabled:
        return None
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type != "cuda":
        return None
    if dtype is not None:
        if dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"autocast dtype must be torch.float16 or torch.bfloat16, got {dtype}")
        return dtype
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device, enabled: bool = True, dtype: torch.dtype | None = None):
    """A mixed-precision context for the forward pass: ``torch.autocast`` in bfloat16 (or
    float16 on GPUs without bf16, or the given ``dtype``) on CUDA, a no-op elsewhere, so
    notebooks can write ``with autocast(device, amp):`` and run anywhere."""
    dt = amp_dtype(device, enabled, dtype)
    if dt is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dt)


def to_channels_last(obj):
    """Put a model's (or a 4-d tensor's) memory in channels_last (NHWC) order, the layout
    tensor cores and cuDNN prefer for convolutions. Modules are converted in place and
    returned; tensors that are not 4-d are returned unchanged."""
    if isinstance(obj, nn.Module):
        return obj.to(memory_format=torch.channels_last)
    if isinstance(obj, torch.Tensor):
        return obj.contiguous(memory_format=torch.channels_last) if obj.dim() == 4 else obj
    raise TypeError(f"to_channels_last expects an nn.Module or a torch.Tensor, got {type(obj).__name__}")
