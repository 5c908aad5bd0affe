"""Thread settings that keep training fast when the CPU is shared (framework-neutral: no
torch, no TensorFlow import, so ``course run`` can hand them to a kernel before either starts).

PyTorch's CPU kernels run on OpenMP (GNU libgomp in the pip wheels); by default an idle
thread spins for the next parallel region (300,000 turns) before it sleeps. Beside another
CPU-bound process (a second notebook, a browser tab, an autograder) those spinning threads
take the cores the real work needs, and training slows far more than a fair share would cost.
``GOMP_SPINCOUNT=1000`` keeps a short spin, which is what makes a quiet machine fast (the next
region usually starts within it), then sleeps. Measured on 2 cores, ``course bench contention``'s
workload (2 epochs of the small CNN, 3,000 images, batch 16), alone / beside one busy loop:
libgomp's default 5.4-6.6 s / 20.0-24.3 s; ``OMP_WAIT_POLICY=PASSIVE`` (no spin, this module's
first choice) 7.2-9.5 s / 15.3-17.1 s, so 40 % slower on a quiet machine; ``GOMP_SPINCOUNT=1000``
5.9-6.5 s / 15.9-18.7 s: the quiet speed of the default with the busy speed of PASSIVE. Thread
counts come from the CPUs this process may actually run on (``os.sched_getaffinity``: a
container or ``taskset`` limit), not the machine's total.

NumPy and SciPy (the pip wheels' OpenBLAS, which scikit-learn's linear heads call) keep their own
pthreads pool that spins too and ignores the OpenMP settings; their work in the course is small
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
    """Environment for a process that trains on the CPU: a short OpenMP spin before idle
    threads sleep, thread pools sized to ``cpus`` (default :func:`available_cpus`), and one
    OpenBLAS thread."""
    n = str(cpus if cpus is not None else available_cpus())
    return {
        "GOMP_SPINCOUNT": "1000",       # libgomp (torch's wheels): spin briefly, then sleep
        "KMP_BLOCKTIME": "0",           # Intel / LLVM OpenMP (MKL builds): sleep when idle
        "OMP_NUM_THREADS": n,           # torch intra-op, oneDNN, MKL
        "TF_NUM_INTRAOP_THREADS": n,    # TensorFlow's own pools
        "OPENBLAS_NUM_THREADS": "1",    # NumPy/SciPy's OpenBLAS pool spins whatever the policy
    }
