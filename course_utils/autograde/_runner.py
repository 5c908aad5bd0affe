"""Executes one student notebook *inside* the sandbox; never imported by the grader.

This file is bind-mounted read-only into each sandbox and started as a script
(``python -I _runner.py``), so it depends only on the standard library and on
nbclient/jupyter_client/nbformat from the course environment -- not on
``course_utils``, whose import would pull in more code than the sandbox needs.

It has two modes:

``_runner.py``
    The grader side inside the sandbox.  It reads one JSON job from stdin (the
    sanitised notebook with the hidden tests restored, the execution settings and the
    kernel's resource limits), copies the submission's files into its private
    writable working directory, starts a kernel through the launcher below and runs
    the cells one at a time with nbclient.  After every cell it writes one JSON line
    to the results pipe (read by the grader outside), so that whatever was
    executed before a crash, a kill or a timeout is already safe outside.

``_runner.py kernel LIMITS_JSON PACKAGE_DIR ARGS...``
    The kernel launcher (the ``argv`` of the sandbox's kernelspec).  It applies the
    resource limits to itself and then becomes the kernel (:func:`ipykernel_main`,
    which imports the package at PACKAGE_DIR before the submission can shadow it),
    so the limits bind the student's kernel and every process it starts, but not the
    runner above, which must survive a memory bomb to report what happened.

Events written to the results pipe, one JSON object per line::

    {"event": "ready", "language_info": {...}, "kernel_pid": pid}
    {"event": "start", "index": i}                    # cell i is about to run
    {"event": "cell", "index": i, "outputs": [...], "execution_count": n,
     "execution": {...}, "dropped_output_bytes": k, "processes": p,
     "reply": {"status": "ok"|"error"|..., "ename": ..., "evalue": ..., "traceback": [...]}}
    {"event": "kernel_died", "index": i, "returncode": rc}
    {"event": "unresponsive", "index": i, "message": "..."}
    {"event": "error", "index": i, "message": "..."}
    {"event": "done", "max_processes": p, "cpu_seconds": {"runner": s, "kernel": s}}

The results pipe's descriptor number is given in the job (``results_fd``); it is
not inherited by the kernel.  ``--sandboxed`` makes the runner drop to the
unprivileged sandbox user first.
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import os
import resource
import shutil
import signal
import sys
import traceback

SANDBOX_UID = 65534
PR_SET_DUMPABLE = 4
KERNEL_NAME = "course-sandbox"

_RLIMITS = {
    "cpu": resource.RLIMIT_CPU,
    "data": resource.RLIMIT_DATA,
    "as": resource.RLIMIT_AS,
    "nproc": resource.RLIMIT_NPROC,
    "fsize": resource.RLIMIT_FSIZE,
    "nofile": resource.RLIMIT_NOFILE,
    "core": resource.RLIMIT_CORE,
}


def apply_limits(limits: dict) -> None:
    """Set soft and hard rlimits; ``cpu`` gets a 5 s grace between SIGXCPU and SIGKILL."""
    for name, value in limits.items():
        if value is None:
            continue
        soft = hard = int(value)
        if name == "cpu":
            hard = soft + 5
        resource.setrlimit(_RLIMITS[name], (soft, hard))


def kernel_main(argv: list[str]) -> None:
    """Kernel launcher: limit this process, then become the IPython kernel.

    Started as ``python -I -S runner.py kernel ...``, it applies the limits first (before
    any code of the environment runs), then loads the environment's ``site`` itself and
    continues as the kernel in the same process (:func:`ipykernel_main`), which saves
    starting a second interpreter per submission.  ``-I`` implies ``-P``: the working
    directory, which holds the submission's files, is not put on ``sys.path``, and
    IPython respects that (``sys.flags.safe_path``).
    """
    apply_limits(json.loads(argv[0]))
    import site

    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    site.main()
    ipykernel_main(argv[1:])


def ipykernel_main(argv: list[str]) -> None:
    """Start the IPython kernel so that the submission cannot shadow installed packages.

    A ``course_utils/`` (or ``numpy/``) folder shipped next to the notebook would
    otherwise be imported instead of the real package -- IPython puts the working
    directory before site-packages, and an editable install's finder comes after every
    ``sys.path`` entry -- and its fake checkers would pass every test.  So: the package
    named by ``argv[0]`` (its directory; ``course_utils`` when grading the course) is
    imported first and checked to come from there, the working directory goes to the
    *end* of ``sys.path`` (a student's helper module still imports, an installed
    package always wins), and IPython is told not to add it again (``-P`` sets
    ``sys.flags.safe_path``, which IPython respects).
    """
    pinned, args = argv[0], argv[1:]
    if pinned:
        name = os.path.basename(pinned.rstrip("/"))
        module = __import__(name)
        origin = os.path.dirname(os.path.realpath(getattr(module, "__file__", "") or ""))
        if origin != os.path.realpath(pinned):
            raise SystemExit(f"{name} was imported from {origin}, not from {pinned}: "
                             "refusing to run the submission")
    cwd = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", cwd)] + [cwd]
    # The kernelspec turns the debugger off; without this, ipykernel imports debugpy
    # at start anyway (a tenth of a CPU-second per submission).
    sys.modules.setdefault("debugpy", None)
    from ipykernel import kernelapp

    sys.argv = [sys.argv[0], *args]
    kernelapp.launch_new_instance()


def limit_self(data_bytes) -> None:
    """Bound the runner's own memory (soft ``RLIMIT_DATA``): what it keeps is bounded by
    the output limits, and this stops anything else.  Only the soft limit, so that the
    kernel launcher below can still set the kernel's own (larger) limit."""
    if not data_bytes:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = int(data_bytes) if hard == resource.RLIM_INFINITY else min(int(data_bytes), hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def drop_privileges() -> None:
    """Become the unprivileged sandbox user and check that no capability is left.

    When the grader runs as root, the sandbox starts as root *of its own user
    namespace* (so that it could set up the mounts); the first thing the runner does
    is to switch to uid/gid 65534, which clears every capability.
    """
    if os.getuid() == 0 or os.geteuid() == 0:
        os.setgroups([])
        os.setgid(SANDBOX_UID)
        os.setuid(SANDBOX_UID)
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("CapEff:", "CapPrm:", "CapAmb:")) and int(line.split()[1], 16):
                raise SystemExit(f"sandbox runner still holds capabilities: {line.strip()}")
    # Not dumpable: processes of the same uid (the student's kernel) cannot open
    # /proc/<runner>/fd/* (our results pipe) nor ptrace this process.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def count_tasks() -> int:
    """Processes and threads in the sandbox's PID namespace (what RLIMIT_NPROC counts;
    the sandbox's /proc shows nothing else)."""
    total = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                total += len(os.listdir(f"/proc/{name}/task"))
            except OSError:  # exited meanwhile
                pass
    return total


def reap_strays(keep: set[int]) -> int:
    """Kill every process of the sandbox except ``keep`` (used after a fork bomb, so
    that the kernel can run the remaining cells); returns how many were killed."""
    killed = 0
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in keep:
            try:
                os.kill(int(name), signal.SIGKILL)
                killed += 1
            except OSError:  # not ours (the sandbox's init) or already gone
                pass
    return killed


def prepare_workdir(job: dict) -> None:
    """Copy the submission's files into the private, writable working directory."""
    src, dst = job["input_dir"], job["work_dir"]
    os.makedirs(dst, exist_ok=True)
    if os.path.isdir(src):
        shutil.copytree(src, dst, dirs_exist_ok=True, symlinks=True)


def write_kernelspec(job: dict) -> None:
    """A kernelspec whose argv goes through the limiting launcher above."""
    kdir = os.path.join(job["jupyter_path"], "kernels", KERNEL_NAME)
    os.makedirs(kdir, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-I", "-S", os.path.abspath(__file__), "kernel",
                 json.dumps(job["kernel_limits"]), job.get("pin_package") or "",
                 "-f", "{connection_file}"],
        "display_name": "Python 3 (sandboxed grading)",
        "language": "python",
        "metadata": {"debugger": False},
    }
    with open(os.path.join(kdir, "kernel.json"), "w") as fh:
        json.dump(spec, fh)


async def _wait_for_ready(kc, timeout: float | None = None) -> None:
    """jupyter_client's ``wait_for_ready`` without its final 0.2 s of listening for IOPub
    to fall silent.

    That pause is pure idle time in every submission (a fifth of a small one's grading),
    and the messages it discards are the kernel_info request's status messages, which
    nbclient ignores anyway: it only collects outputs whose parent is the cell's own
    execute request.  The rest is the same: ask for kernel_info until the reply comes and
    IOPub is seen to be connected, give up when the kernel dies or ``timeout`` passes.
    """
    import time
    from queue import Empty

    deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
    while True:
        kc.kernel_info()
        try:
            msg = await kc.shell_channel.get_msg(timeout=1)
        except Empty:
            pass
        else:
            if msg["msg_type"] == "kernel_info_reply":
                try:  # something on IOPub: it is connected
                    await kc.iopub_channel.get_msg(timeout=0.2)
                except Empty:
                    pass
                else:
                    kc._handle_kernel_info_reply(msg)
                    break
        if not await kc._async_is_alive():
            raise RuntimeError("Kernel died before replying to kernel_info")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kernel didn't respond in {timeout:.0f} seconds")
    while True:  # drop what is already there, without waiting for more
        try:
            await kc.iopub_channel.get_msg(timeout=0)
        except Empty:
            break


def reply_summary(execute_reply: dict | None) -> dict | None:
    """What the grader needs of a cell's execute reply: its ``status`` (a test cell
    passes only when it is ``ok``) and, for an error, the exception's name, value and
    traceback (cut short: the student's code chooses them)."""
    if not execute_reply:
        return None
    content = execute_reply.get("content") or {}
    summary = {"status": str(content.get("status"))[:20]}
    if summary["status"] != "ok":
        tb = content.get("traceback") or []
        summary.update(ename=str(content.get("ename", ""))[:200],
                       evalue=str(content.get("evalue", ""))[:2000],
                       traceback=[str(line)[:2000] for line in tb[-20:]] if isinstance(tb, list)
                       else [])
    return summary


async def execute(job: dict, emit, count: bool = True) -> None:
    # jsonschema builds an IRI grammar at import (about 1.5 s) when rfc3987_syntax is
    # installed; the runner never validates IRIs, so skip it (jsonschema treats the
    # package as absent).  This is paid once per submission, so it matters.
    # The same for jsonschema's other optional format checkers (0.1 s of imports).
    for name in ("rfc3987_syntax", "rfc3987", "rfc3339_validator", "rfc3986_validator",
                 "isoduration", "fqdn", "jsonpointer", "uri_template", "webcolors", "arrow",
                 "idna"):
        sys.modules.setdefault(name, None)
    import nbformat
    from jupyter_core.utils import ensure_async
    from jupyter_client.asynchronous.client import AsyncKernelClient
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    AsyncKernelClient.wait_for_ready = _wait_for_ready

    import zmq

    max_bytes = int(job.get("max_output_bytes") or 0)
    max_total = int(job.get("max_notebook_output_bytes") or 0)
    nproc = job["kernel_limits"].get("nproc")

    class CappedClient(NotebookClient):
        """Drops outputs beyond ``max_output_bytes`` per cell and
        ``max_notebook_output_bytes`` per notebook, so that a print loop can neither
        exhaust the runner's memory nor make a graded notebook (and its feedback page)
        of gigabytes; the count of dropped bytes goes back with the cell.  A single
        message larger than a cell's limit never reaches the runner at all (ZeroMQ's
        ``MAXMSGSIZE`` on the client's sockets).  Keeps each cell's execute reply (see
        :func:`reply_summary`)."""

        dropped: dict[int, int] = {}
        kept: dict[int, int] = {}
        replies: dict[int, dict] = {}
        notebook_full: set[int] = set()  # cells that lost output to the notebook's limit
        total = 0

        timed_out = False  # the current cell reached its time limit

        async def _async_handle_timeout(self, timeout, cell=None):
            CappedClient.timed_out = True
            return await super()._async_handle_timeout(timeout, cell)

        def create_kernel_manager(self):
            km = super().create_kernel_manager()
            make_client = km.client

            def client(**kwargs):
                kc = make_client(**kwargs)
                if max_bytes:  # default options of the sockets its context creates
                    kc.context.setsockopt(zmq.MAXMSGSIZE, max_bytes + (1 << 20))
                return kc
            km.client = client
            return km

        def output(self, outs, msg, display_id, cell_index):
            if max_bytes or max_total:
                size = len(json.dumps(msg.get("content", {})))
                kept = self.kept.get(cell_index, 0)
                whole = bool(max_total and CappedClient.total + size > max_total)
                if whole or (max_bytes and kept + size > max_bytes):
                    self.dropped[cell_index] = self.dropped.get(cell_index, 0) + size
                    if whole:
                        self.notebook_full.add(cell_index)
                    return None
                self.kept[cell_index] = kept + size
                CappedClient.total += size
            return super().output(outs, msg, display_id, cell_index)

    def cell_executed(cell, cell_index, execute_reply):
        CappedClient.replies[cell_index] = reply_summary(execute_reply)

    nb = nbformat.from_dict(job["notebook"])
    execute_opts = job["execute"]
    client = CappedClient(
        nb,
        kernel_name=KERNEL_NAME,
        timeout=execute_opts["timeout"],
        startup_timeout=execute_opts["startup_timeout"],
        iopub_timeout=execute_opts["iopub_timeout"],
        interrupt_on_timeout=execute_opts["interrupt_on_timeout"],
        raise_on_iopub_timeout=execute_opts["raise_on_iopub_timeout"],
        error_on_timeout=execute_opts["error_on_timeout"],
        extra_arguments=execute_opts["extra_arguments"],
        allow_errors=True,
        record_timing=True,
        shutdown_kernel="immediate",
        on_cell_executed=cell_executed,
        resources={"metadata": {"path": job["work_dir"]}},
    )
    max_procs = 0
    client.reset_execution_trackers()
    async with client.async_setup_kernel():
        info_id = await ensure_async(client.kc.kernel_info())
        info = await client.async_wait_for_reply(info_id)
        emit({"event": "ready",
              "language_info": (info or {}).get("content", {}).get("language_info"),
              "kernel_pid": getattr(getattr(client.km, "provisioner", None), "pid", None)})
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            emit({"event": "start", "index": index})
            fatal = None
            lost = CappedClient.timed_out = False
            peak = [0]

            async def sample():  # the most tasks seen while the cell runs
                while True:
                    peak[0] = max(peak[0], count_tasks())
                    await asyncio.sleep(0.2)

            sampler = asyncio.ensure_future(sample()) if count else None
            try:
                await client.async_execute_cell(
                    cell, index, execution_count=client.code_cells_executed + 1)
            except DeadKernelError:
                returncode = None
                provisioner = getattr(client.km, "provisioner", None)
                if provisioner is not None:
                    try:
                        returncode = await provisioner.poll()
                    except Exception:  # the exit status is only for the feedback
                        returncode = None
                fatal = {"event": "kernel_died", "index": index, "returncode": returncode}
            except CellTimeoutError as exc:
                if "IOPub" in str(exc) and not CappedClient.timed_out:
                    # The reply came but the cell's output stream did not end: a message
                    # over MAXMSGSIZE was dropped (and the socket reconnected).  The
                    # kernel is idle, so the next cells can run; this one failed.
                    lost = True
                else:
                    # Interrupt did not bring the kernel back (or interrupts are
                    # disabled): it is still busy, so nothing after this cell can run.
                    fatal = {"event": "unresponsive", "index": index, "message": str(exc)}
            finally:
                if sampler is not None:
                    sampler.cancel()
            procs = max(peak[0], count_tasks()) if count else 0
            max_procs = max(max_procs, procs)
            if count and nproc and procs >= nproc - 8:
                # A fork bomb: stop whatever the kernel left behind, so that it can
                # still run the remaining cells.
                kernel_pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
                reap_strays({1, os.getpid(), kernel_pid})
            if lost:
                # ZeroMQ disconnected the IOPub socket from the kernel (a message over
                # MAXMSGSIZE) and does not reconnect it: open a new one, and wait until
                # it hears the kernel again.
                client.kc.iopub_channel.stop()
                client.kc._iopub_channel = None
                client.kc.iopub_channel.start()
                try:
                    await client.kc.wait_for_ready(timeout=execute_opts["iopub_timeout"] + 10)
                except RuntimeError as exc:
                    fatal = {"event": "unresponsive", "index": index, "message": str(exc)}
            emit({"event": "cell", "index": index, "outputs": cell.get("outputs", []),
                  "execution_count": cell.get("execution_count"),
                  "execution": cell.get("metadata", {}).get("execution", {}),
                  "dropped_output_bytes": client.dropped.get(index, 0),
                  "reply": client.replies.get(index),
                  "output_lost": lost,
                  "notebook_output_full": index in client.notebook_full,
                  "processes": procs})
            if fatal is not None:
                emit(fatal)
                break
    times = os.times()
    emit({"event": "done", "max_processes": max_procs,
          "cpu_seconds": {"runner": round(times.user + times.system, 3),
                          "kernel": round(times.children_user + times.children_system, 3)}})


def runner_main(sandboxed: bool) -> int:
    if sandboxed:
        drop_privileges()
    job = json.load(sys.stdin)
    results_fd = int(job["results_fd"])
    os.set_inheritable(results_fd, False)
    out = os.fdopen(results_fd, "w", buffering=1)

    def emit(event: dict) -> None:
        out.write(json.dumps(event) + "\n")
        out.flush()

    limit_self(job.get("runner_memory"))
    os.makedirs(job["home"], exist_ok=True)
    try:
        prepare_workdir(job)
    except OSError as exc:
        emit({"event": "error", "index": None, "kind": "workdir",
              "message": f"the submission's files could not be copied into the sandbox's "
                         f"working space ({exc.strerror or exc})"})
        return 1
    write_kernelspec(job)
    os.chdir(job["work_dir"])
    try:
        asyncio.run(execute(job, emit, count=sandboxed))
    except Exception as exc:  # reported to the grader, which grades what ran
        traceback.print_exc()
        emit({"event": "error", "index": None,
              "message": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


def self_test() -> int:
    """Can the sandbox user read what grading imports?  Prints ``ok``.

    Finds and reads the packages' first files rather than importing them (a second
    at start-up, for nothing): an unreadable environment fails here already.
    """
    import importlib.util

    drop_privileges()
    for name in ("nbclient", "nbformat", "jupyter_client", "zmq", "ipykernel",
                 "ipykernel_launcher", "IPython"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            raise SystemExit(f"{name} is not importable by the sandbox user")
        with open(spec.origin, "rb") as fh:
            fh.read(1)
    print("ok")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "kernel":
        kernel_main(sys.argv[2:])
    elif "--self-test" in sys.argv[1:]:
        sys.exit(self_test())
    else:
        sys.exit(runner_main(sandboxed="--sandboxed" in sys.argv[1:]))
