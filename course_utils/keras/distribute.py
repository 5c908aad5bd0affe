"""Data-parallel training with ``tf.distribute.MirroredStrategy``, also on a CPU-only machine.

MirroredStrategy keeps one copy of the model per device, splits every global batch between
them and sums the gradients before each update, so (for models without BatchNorm, whose
statistics are per replica, and without dropout) training follows single-device training
up to floating-point summation order. On a laptop, :func:`configure_cpu_devices` splits
the CPU into logical devices so the same code runs and can be tested; on a GPU machine the
strategy uses the GPUs.

TensorFlow fixes its devices when it first initialises them (the first tensor, model or
device query), so :func:`configure_cpu_devices` must run first thing in a fresh process or
kernel::

    from course_utils import keras as ck
    ck.configure_cpu_devices(2)               # before anything else touches TensorFlow
    strategy = ck.mirrored_strategy()
    with strategy.scope():
        model = ck.create_model("small_cnn")
        ck.compile_model(model, lr=1e-3)
    ck.fit(model, loader, epochs=2)           # global batch = loader.batch_size
"""
from __future__ import annotations

import logging

from course_utils.keras._backend import tf

__all__ = ["configure_cpu_devices", "mirrored_strategy"]

log = logging.getLogger(__name__)


def configure_cpu_devices(n: int = 2) -> list[str]:
    """Split the first physical CPU into ``n`` logical devices; returns their names.

    Raises RuntimeError with what to do if TensorFlow has already initialised its devices
    (then a fresh process is needed). Calling it again with the same ``n`` is harmless."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"configure_cpu_devices: n must be a positive int, got {n!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == n:
        return [d.name for d in tf.config.list_logical_devices("CPU")]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as exc:
        raise RuntimeError(
            f"configure_cpu_devices({n}): TensorFlow has already initialised its devices "
            f"({len(tf.config.list_logical_devices('CPU'))} logical CPU(s)); call it first thing "
            "in a fresh process or kernel, before any tensor or model is created") from exc
    names = [d.name for d in tf.config.list_logical_devices("CPU")]
    log.info("TensorFlow now sees %d logical CPU devices: %s", len(names), names)
    return names


def mirrored_strategy(devices: list[str] | None = None) -> "tf.distribute.MirroredStrategy":
    """A MirroredStrategy over ``devices`` (default: all GPUs, else all logical CPUs). On CPUs
    gradients are summed with ``ReductionToOneDevice`` (NCCL is for GPUs)."""
    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    cpu_only = all("CPU" in d.upper() for d in devices)
    ops = tf.distribute.ReductionToOneDevice() if cpu_only else None
    strategy = tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=ops)
    log.info("MirroredStrategy over %d device(s): %s", strategy.num_replicas_in_sync, devices)
    return strategy
