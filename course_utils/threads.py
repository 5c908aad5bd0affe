"""Thread settings that keep training fast when the CPU is shared (framework-neutral: no
torch, no TensorFlow import, so ``course run`` can hand them to a kernel before either starts).

PyTorch's CPU kernels run on OpenMP (GNU libgomp in the pip wheels); by default its idle
threads spin-wait for the next parallel region. Beside another CPU-bound process (a second
notebook, a browser tab, an autograder) those spinning threads take the cores the real work
needs, and training slows far more than a fair share would cost. ``OMP_WAIT_POLICY=PASSIVE``
makes idle threads sleep instead. Thread counts come from the CPUs this process may actually
run on (``os.sched_getaffinity``: a container or ``taskset`` limit), not the machine's total.

NumPy and SciPy (the pip wheels' OpenBLAS, which scikit-learn's linear heads call) keep their own
pthreads pool that spins too and ignores ``OMP_WAIT_POLICY``; their work in the course is small
matrices (linear heads on cached features), where more threads only add the spinning. Measured on
2 cores (``LogisticRegression`` on 1,000 x 256 features, three fits): 0.09 s CPU with
``OPENBLAS_NUM_THREADS=1`` against 2.18 s with two threads; the heaviest notebook cell (06's
linear heads on the large similar target) went from 120 s to 47 s. So OpenBLAS gets one thread.

These are environment variables: they act only if set before the runtime starts (the
kernel's environment, which ``course run`` sets; ``course bench contention`` measures them).
"""
from __future__ import annotations

import os

__all__ = ["available_cpus", "thread_env"]


def available_cpus() -> int:
    """CPUs this process may run on (affinity mask where the OS has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def thread_env(cpus: int | None = None) -> dict[str, str]:
    """Environment for a process that trains on the CPU: passive OpenMP waiting, thread
    pools sized to ``cpus`` (default :func:`available_cpus`), and one OpenBLAS thread."""
    n = str(cpus if cpus is not None else available_cpus())
    return {
        "OMP_WAIT_POLICY": "PASSIVE",   # libgomp / LLVM OpenMP: idle threads sleep, not spin
        "KMP_BLOCKTIME": "0",           # Intel OpenMP (MKL builds) the same
        "OMP_NUM_THREADS": n,           # torch intra-op, oneDNN, MKL
        "TF_NUM_INTRAOP_THREADS": n,    # TensorFlow's own pools
        "OPENBLAS_NUM_THREADS": "1",    # NumPy/SciPy's OpenBLAS pool spins whatever the policy
    }
