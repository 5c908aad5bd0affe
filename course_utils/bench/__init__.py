"""Benchmarks run by ``course bench NAME``.

Each benchmark is a module ``course_utils.bench.<name>`` exposing ``main(argv) -> int``.
They measure the two sides of a comparison in the same process, one after the other,
and print both figures and their ratio: these machines are shared and noisy, so only
ratios taken side by side mean anything.
"""
from __future__ import annotations

__all__ = ["BENCHMARKS"]

#: name -> (module, one-line description); the CLI lists these in ``course bench --help``.
BENCHMARKS = {
    "data": ("course_utils.bench.data", "fast in-memory loader vs torchvision FashionMNIST + DataLoader"),
    "train": ("course_utils.bench.train", "fit() vs a plain loop; cached features vs frozen backbone; FLOP/s"),
    "keras": ("course_utils.bench.keras", "Keras vs PyTorch images/s on the same small CNN"),
    "grade": ("course_utils.bench.grade", "parallel sandboxed grading vs nbgrader's serial autograde"),
    "contention": ("course_utils.bench.contention",
                   "training alone vs beside a CPU-bound process (slowdown ratio)"),
}
