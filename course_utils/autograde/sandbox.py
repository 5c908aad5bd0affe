"""Run one notebook in a bubblewrap sandbox and collect its cells as they finish.

The grader process (which can read the gradebook and ``source/``) stays outside; only
the kernel and the nbclient loop that drives it (``_runner.py``) run inside.  The
sandbox has:

* its own user, PID, network, IPC, UTS (and, where possible, cgroup) namespaces; the
  network namespace has only a loopback interface, used by the kernel and its client;
* an unprivileged user: uid/gid 65534 inside.  When the grader runs as root, the
  sandbox gets a user namespace created here that maps 65534 to the host's 65534
  (``nobody``), so its processes are not root on the host either (and
  ``RLIMIT_NPROC``, which the kernel never enforces for host uid 0, applies);
  otherwise bubblewrap maps 65534 to the calling user;
* read-only binds of ``/usr`` (and the ``/bin``, ``/lib*`` links), the Python
  installation, the virtual environment, the ``course_utils`` sources and nothing
  else of the host: no ``/etc`` beyond a generated ``passwd``/``group``/``hosts`` and
  the loader cache, no home directory, no course directory;
* a size-limited private tmpfs for ``/tmp``, ``/dev/shm`` and the home directory;
  the working directory (a copy of the submission's files) lives in that home, so a
  submission never writes to the host's disk at all;
* rlimits on the kernel and everything it starts (CPU seconds, data segment and
  address space, processes, file size, open files, no core dumps);
* a wall-clock deadline enforced from outside: the sandbox's PID namespace is killed
  as a whole (killing bubblewrap kills its init, which takes every process with it).
"""
from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from course_utils.threads import thread_env

__all__ = ["Limits", "Sandbox", "SandboxRun", "SandboxUnavailable", "GradingCancelled",
           "find_bwrap", "GiB", "MiB"]

log = logging.getLogger(__name__)

MiB = 1 << 20
GiB = 1 << 30
SANDBOX_UID = 65534
HOME = "/home/student"
RUNNER_PATH = "/run/course-grade/runner.py"
INPUT_DIR = "/run/course-grade/input"
_RUNNER_SOURCE = Path(__file__).with_name("_runner.py")

INSTALL_HINT = (
    "bubblewrap ('bwrap') is needed to run untrusted submissions in a sandbox. "
    "Install it with 'apt-get install bubblewrap' (Debian/Ubuntu; 'make system-deps' "
    "does this), 'dnf install bubblewrap' (Fedora) or 'pacman -S bubblewrap' (Arch), "
    "or pass --no-sandbox to run submissions without a sandbox (trusted code only)."
)

# Creates a user namespace and waits while the parent writes its uid/gid maps; then,
# as root of the new namespace, forbids user namespaces inside it (what bubblewrap's
# --disable-userns does when it creates the namespace itself) and waits to be told
# to exit; the parent keeps a file descriptor to the namespace (see _make_userns).
_USERNS_HELPER = (
    "import ctypes,os,sys\n"
    "libc=ctypes.CDLL(None,use_errno=True)\n"
    "if libc.unshare(0x10000000)!=0:\n"
    "    sys.stderr.write(os.strerror(ctypes.get_errno()));sys.exit(1)\n"
    "os.write(1,b'r');os.read(0,1)\n"
    "try:\n"
    "    open('/proc/sys/user/max_user_namespaces','w').write('0');os.write(1,b'd')\n"
    "except OSError:\n"
    "    os.write(1,b'n')\n"
    "os.read(0,1)\n"
)


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot be used on this machine; the message says what to do."""


class GradingCancelled(BaseException):
    """Raised by :meth:`Sandbox.run` after :meth:`Sandbox.cancel` (e.g. on Ctrl-C).

    A BaseException, like KeyboardInterrupt, so that nbgrader's per-submission error
    handling does not record it as the student's failure.
    """


@dataclass(frozen=True)
class Limits:
    """Resource limits for one submission.

    ``memory`` is ``RLIMIT_DATA`` of the kernel (heap and private mappings: what a
    memory bomb allocates); ``address_space`` (``RLIMIT_AS``) defaults to ``memory``
    plus 8 GiB, because PyTorch and TensorFlow reserve gigabytes of address space they
    never touch.  ``cpu_seconds`` defaults to the wall-clock limit.  ``processes``
    counts every process and thread of the sandbox (a fork bomb stops there).
    ``tmpfs_size`` bounds each of the sandbox's memory-backed file systems: the home
    directory (which holds the working copy of the submission), ``/tmp`` and
    ``/dev/shm``.
    ``cell_timeout=None`` takes nbgrader's ``Execute.timeout`` (30 s unless
    configured).  ``threads`` sets OMP/OpenBLAS/MKL/TF thread counts, so that
    ``workers`` sandboxes share the cores instead of oversubscribing them (``None``:
    :func:`~course_utils.autograde.grade_assignment` uses cores // workers).

    Output and size limits (each reported with its own status and note):
    ``max_output_bytes`` per cell and ``max_notebook_output_bytes`` per notebook of
    outputs kept ("output-limit"; 20 MiB keeps the graded notebook and its feedback page
    quick to write and render); ``max_submission_bytes`` of files besides the notebooks
    ("files"; nbgrader's own ``max_file_size`` is 100 MB); ``max_notebook_bytes`` and
    ``max_cells`` per submitted notebook ("too-large"; the assignments have 20-odd
    cells, and a notebook is parsed several times while the gradebook is locked);
    ``runner_memory`` for the grading client inside the sandbox (what it holds is
    bounded by the output limits; this stops anything else).
    """

    wall_seconds: float = 300.0
    cell_timeout: int | None = None
    memory: int = 4 * GiB
    address_space: int | None = None
    cpu_seconds: int | None = None
    processes: int = 256
    file_size: int = 256 * MiB
    open_files: int = 1024
    tmpfs_size: int = 512 * MiB
    max_output_bytes: int = 5 * MiB
    threads: int | None = None
    max_notebook_output_bytes: int = 20 * MiB
    max_submission_bytes: int = 100 * MiB
    max_notebook_bytes: int = 16 * MiB
    max_cells: int = 2000
    runner_memory: int = 1 * GiB

    def __post_init__(self):
        for name in ("wall_seconds", "memory", "processes", "file_size", "open_files",
                     "tmpfs_size", "threads", "max_output_bytes", "max_notebook_output_bytes",
                     "max_submission_bytes", "max_notebook_bytes", "max_cells",
                     "runner_memory"):
            value = getattr(self, name)
            if (value is None and name != "threads") or (value is not None and value <= 0):
                raise ValueError(f"Limits.{name} must be positive, got {value!r}")

    def kernel_rlimits(self) -> dict[str, int]:
        return {
            "cpu": int(self.cpu_seconds or max(1, round(self.wall_seconds))),
            "data": int(self.memory),
            "as": int(self.address_space or self.memory + 8 * GiB),
            "nproc": int(self.processes),
            "fsize": int(self.file_size),
            "nofile": int(self.open_files),
            "core": 0,
        }


@dataclass
class SandboxRun:
    """What came back from one run: the runner's events, in order, and how it ended."""

    events: list[dict] = field(default_factory=list)
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    log_tail: str = ""

    def last(self, kind: str) -> dict | None:
        for event in reversed(self.events):
            if event.get("event") == kind:
                return event
        return None


def find_bwrap() -> str | None:
    """Path of the bubblewrap executable, or None ($COURSE_BWRAP overrides the search)."""
    override = os.environ.get("COURSE_BWRAP")
    if override:
        return override if os.access(override, os.X_OK) else None
    return shutil.which("bwrap")


def _inside(path: Path, roots) -> bool:
    return any(path == r or r in path.parents for r in roots)


class Sandbox:
    """Executes sandboxed notebook jobs; one instance serves a whole grading run.

    ``enabled=False`` runs the same runner as a plain subprocess (trusted code only):
    rlimits and the wall-clock deadline still apply, isolation does not.
    ``ro_binds`` are extra host paths made readable inside (for example a dataset
    cache); ``env`` adds environment variables for the kernel.
    """

    def __init__(self, limits: Limits | None = None, *, enabled: bool = True,
                 ro_binds=(), env: dict[str, str] | None = None, bwrap: str | None = None):
        self.limits = limits or Limits()
        self.enabled = enabled
        self.extra_env = dict(env or {})
        self.python = sys.executable
        self._root_mode = os.geteuid() == 0
        self._help: str | None = None
        self._active: set[subprocess.Popen] = set()
        self._active_lock = threading.Lock()
        self._cancelled = threading.Event()
        self.ro_binds = self._python_binds() + [Path(p).resolve() for p in ro_binds]
        for path in self.ro_binds:
            if not path.exists():
                raise FileNotFoundError(f"ro_binds: {path} does not exist; pass existing "
                                        "paths to make readable inside the sandbox")
        self.bwrap = (bwrap or find_bwrap()) if enabled else None
        if enabled and not self.bwrap:
            raise SandboxUnavailable(INSTALL_HINT)
        self._tmp = Path(tempfile.mkdtemp(prefix="course-grade-"))
        # Removed by close() or, at the latest, when this object goes away.
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        try:
            if enabled:
                self._write_etc()
                self._self_test()
        except BaseException:
            self.close()
            raise

    # -- set-up -----------------------------------------------------------------
    def _python_binds(self) -> list[Path]:
        """Host trees the runner and kernel need: Python, the venv, course_utils."""
        import course_utils

        candidates = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix),
                      Path(os.path.realpath(sys.executable)).parent.parent,
                      Path(course_utils.__file__).resolve().parent]
        binds: list[Path] = []
        for cand in sorted({c.resolve() for c in candidates}, key=lambda p: len(p.parts)):
            if cand == Path("/"):
                raise SandboxUnavailable(f"the Python installation ({sys.executable}) lives "
                                         "at the file-system root; use a virtual environment")
            if not _inside(cand, binds) and not _inside(cand, [Path("/usr")]):
                binds.append(cand)
        # The venv's own path (sys.prefix) may be a symlink farm: keep the literal path too.
        literal = Path(sys.prefix).absolute()
        if literal not in binds and not _inside(literal, binds) and literal.exists():
            binds.append(literal)
        return binds

    def check_hidden(self, *paths) -> None:
        """Refuse to run when a secret path (course dir, gradebook) would be visible."""
        for p in paths:
            p = Path(p).resolve()
            for b in self.ro_binds:
                if p == b or b in p.parents:
                    raise SandboxUnavailable(
                        f"{p} lies inside {b}, which the sandbox makes readable to "
                        "submissions; move the course directory out of it")

    def _write_etc(self) -> None:
        etc = self._tmp / "etc"
        etc.mkdir()
        (etc / "passwd").write_text(
            f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"student:x:{SANDBOX_UID}:{SANDBOX_UID}:student:{HOME}:/bin/sh\n")
        (etc / "group").write_text(f"root:x:0:\nstudent:x:{SANDBOX_UID}:\n")
        (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
        (etc / "hostname").write_text("grader\n")
        for f in etc.iterdir():
            f.chmod(0o644)
        etc.chmod(0o755)
        self._tmp.chmod(0o755)

    def _self_test(self) -> None:
        """Start one sandbox before grading: bubblewrap works, and the sandbox user can
        run this Python and import the kernel machinery (it may not be able to read
        an environment kept in a private home directory)."""
        argv, fds, cleanup = self._bwrap_argv(
            None, [self.python, "-I", RUNNER_PATH, "--sandboxed", "--self-test"])
        try:
            res = subprocess.run(argv, pass_fds=fds, capture_output=True, text=True,
                                 timeout=120)
        finally:
            cleanup()
        if res.returncode == 0 and res.stdout.strip().endswith("ok"):
            return
        err = res.stderr.strip()
        if err.startswith("bwrap:") or not err:
            raise SandboxUnavailable(
                f"bubblewrap ({self.bwrap}) could not start a sandbox: "
                f"{err or 'exit status %d' % res.returncode}. It needs unprivileged user "
                "namespaces (sysctl kernel.unprivileged_userns_clone=1, "
                "user.max_user_namespaces > 0). Pass --no-sandbox only for trusted code.")
        raise SandboxUnavailable(
            f"the sandbox user (uid {SANDBOX_UID}) cannot run {self.python} with the "
            f"course's packages: {err.splitlines()[-1]}. Make the Python installation and "
            "the virtual environment readable by all users (e.g. keep them outside a "
            "private home directory), or pass --no-sandbox for trusted code.")

    def _supports(self, option: str) -> bool:
        """Whether this bubblewrap knows ``option`` (``--disable-userns`` is 0.8+)."""
        if self._help is None:
            res = subprocess.run([self.bwrap, "--help"], capture_output=True, text=True)
            self._help = res.stdout + res.stderr
        return option in self._help

    def _make_userns(self) -> int:
        """As root: a user namespace mapping 65534 -> host 65534; returns an fd to it."""
        helper = subprocess.Popen([sys.executable, "-I", "-S", "-c", _USERNS_HELPER],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        try:
            if helper.stdout.read(1) != b"r":
                raise SandboxUnavailable("could not create a user namespace for the "
                                         f"sandbox: {helper.stderr.read().decode().strip()}")
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{helper.pid}/{name}", "w") as fh:
                    # uid 0 is mapped to root so that bubblewrap (still root at that
                    # point) can set up the mounts; the runner drops to 65534 at once.
                    fh.write(f"0 0 1\n{SANDBOX_UID} {SANDBOX_UID} 1\n")
            helper.stdin.write(b"m")
            helper.stdin.flush()
            if helper.stdout.read(1) != b"d":
                log.debug("could not forbid nested user namespaces in the sandbox")
            return os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            helper.stdin.close()
            helper.wait()

    def _bwrap_argv(self, input_dir: Path | None, command: list[str],
                    extra_fds=()) -> tuple[list[str], tuple[int, ...], callable]:
        fds = list(extra_fds)
        closers = []
        argv = [self.bwrap]
        if self._root_mode:
            nsfd = self._make_userns()
            fds.append(nsfd)
            closers.append(lambda: os.close(nsfd))
            argv += ["--userns", str(nsfd), "--cap-drop", "ALL",
                     "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            argv += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
            if self._supports("--disable-userns"):
                argv.append("--disable-userns")
        argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                 "--unshare-cgroup-try", "--hostname", "grader", "--die-with-parent",
                 "--new-session", "--clearenv"]
        # File system: /usr and its compatibility links, then our trees, read-only.
        argv += ["--ro-bind", "/usr", "/usr"]
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            host = Path("/") / name
            if host.is_symlink():
                argv += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir():
                argv += ["--ro-bind", str(host), str(host)]
        # The private tmpfs mounts come before our read-only trees: bwrap mounts in order, so a
        # course checked out under /tmp or /home (a CI clone, say) is bound on top of the empty
        # tmpfs instead of being hidden by it.
        argv += ["--proc", "/proc", "--dev", "/dev",
                 "--perms", "1777", "--size", str(self.limits.tmpfs_size), "--tmpfs", "/tmp",
                 "--perms", "1777", "--size", str(self.limits.tmpfs_size), "--tmpfs", "/dev/shm",
                 "--perms", "0755", "--dir", "/home",
                 "--perms", "1777", "--size", str(self.limits.tmpfs_size), "--tmpfs", HOME,
                 "--perms", "0755", "--dir", "/run"]
        made = set()
        for path in self.ro_binds:
            for parent in reversed(path.parents):
                if parent == Path("/") or parent in made or _inside(parent, self.ro_binds):
                    continue
                if str(parent) in ("/usr", "/tmp", "/home", "/run", "/dev", "/proc", "/etc"):
                    continue
                argv += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
            argv += ["--ro-bind", str(path), str(path)]
        etc = self._tmp / "etc"
        for name in ("passwd", "group", "hosts", "hostname"):
            argv += ["--ro-bind", str(etc / name), f"/etc/{name}"]
        for name in ("ld.so.cache", "localtime"):
            argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        argv += ["--perms", "0755", "--dir", str(Path(RUNNER_PATH).parent),
                 "--ro-bind", str(_RUNNER_SOURCE), RUNNER_PATH]
        if input_dir is not None:
            argv += ["--ro-bind", str(input_dir), INPUT_DIR]
        for key, value in self._env(HOME).items():
            argv += ["--setenv", key, value]
        argv += ["--chdir", HOME, "--", *command]

        def cleanup():
            for close in closers:
                close()
        return argv, tuple(fds), cleanup

    def _env(self, home: str) -> dict[str, str]:
        threads = str(self.limits.threads or 1)
        env = {
            "PATH": f"{Path(self.python).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": home, "USER": "student", "LOGNAME": "student",
            "LANG": "C.UTF-8", "TMPDIR": "/tmp" if self.enabled else str(Path(home) / "tmp"),
            "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1",
            "JUPYTER_PATH": f"{home}/.local/share/jupyter",
            "JUPYTER_RUNTIME_DIR": f"{home}/.local/share/jupyter/runtime",
            "JUPYTER_CONFIG_DIR": f"{home}/.jupyter", "JUPYTER_PLATFORM_DIRS": "1",
            "IPYTHONDIR": f"{home}/.ipython",
            "NBGRADER_EXECUTION": "autograde",
            "OPENBLAS_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads, "NUMEXPR_NUM_THREADS": threads,
            "TF_NUM_INTEROP_THREADS": threads,
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        # Several sandboxes share the cores (one per worker): the course's shared-CPU settings
        # (a short OpenMP spin, then sleep; intra-op pools sized to this sandbox's share).
        env.update(thread_env(int(threads)))
        env.update(self.extra_env)
        return env

    # -- running ----------------------------------------------------------------
    def run(self, job: dict, input_dir: Path | None, *, work_name: str = "work",
            exclude=()) -> SandboxRun:
        """Execute ``job`` (see ``_runner.py``) with ``input_dir`` copied in as the
        working directory (without the top-level names in ``exclude``); returns the
        events, even when the run was killed."""
        read_fd, write_fd = os.pipe()
        os.set_inheritable(write_fd, True)
        job = dict(job)
        rlimits = self.limits.kernel_rlimits()
        if not self.enabled:
            # Outside a user namespace RLIMIT_NPROC counts every process of the user
            # on the machine, not just the kernel's: it would stop a desktop session's
            # kernel from starting threads.
            rlimits.pop("nproc")
        job.update(results_fd=write_fd, kernel_limits=rlimits,
                   max_output_bytes=self.limits.max_output_bytes,
                   max_notebook_output_bytes=self.limits.max_notebook_output_bytes,
                   runner_memory=self.limits.runner_memory,
                   pin_package=_course_utils_dir())
        run_tmp = Path(tempfile.mkdtemp(prefix="run-", dir=self._tmp))
        log_path = run_tmp / "log.txt"
        if input_dir is not None:
            # A private copy the sandbox user can read (the caller's may be 0700).
            input_dir = _readable_copy(Path(input_dir), run_tmp / "input", exclude)
        cleanup = lambda: None  # noqa: E731
        if self.enabled:
            home = HOME
            job.update(home=home, work_dir=f"{home}/{work_name}", input_dir=INPUT_DIR,
                       jupyter_path=f"{home}/.local/share/jupyter")
            cmd = [self.python, "-I", RUNNER_PATH, "--sandboxed"]
            argv, fds, cleanup = self._bwrap_argv(input_dir, cmd, extra_fds=(write_fd,))
            env = None
        else:
            home = str(run_tmp / "home")
            os.makedirs(Path(home) / "tmp")
            job.update(home=home, work_dir=f"{home}/{work_name}",
                       input_dir=str(input_dir) if input_dir else "",
                       jupyter_path=f"{home}/.local/share/jupyter")
            argv, fds = [self.python, "-I", str(_RUNNER_SOURCE)], (write_fd,)
            env = self._env(home)
        result = SandboxRun()
        start = time.monotonic()
        proc = None
        try:
            with open(log_path, "wb") as log_fh:
                try:
                    with self._active_lock:
                        if self._cancelled.is_set():
                            raise GradingCancelled()
                        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log_fh,
                                                stderr=subprocess.STDOUT, pass_fds=fds,
                                                env=env, start_new_session=True, cwd=run_tmp)
                        self._active.add(proc)
                finally:
                    os.close(write_fd)
                    cleanup()
                try:
                    proc.stdin.write(json.dumps(job).encode())
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                self._collect(proc, read_fd, start, result)
            result.seconds = time.monotonic() - start
            result.log_tail = _tail(log_path, 20000)
        finally:
            if proc is not None:
                with self._active_lock:
                    self._active.discard(proc)
            os.close(read_fd)
            shutil.rmtree(run_tmp, ignore_errors=True)
        if self._cancelled.is_set():
            raise GradingCancelled()
        return result

    def cancel(self) -> None:
        """Kill every running sandbox; later :meth:`run` calls raise GradingCancelled."""
        with self._active_lock:
            self._cancelled.set()
            for proc in list(self._active):
                self._kill(proc)

    def _collect(self, proc: subprocess.Popen, read_fd: int, start: float,
                 result: SandboxRun) -> None:
        deadline = start + self.limits.wall_seconds
        buf = b""
        finished = False
        sel = selectors.DefaultSelector()
        sel.register(read_fd, selectors.EVENT_READ)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    result.timed_out = True
                    break
                if not sel.select(timeout=min(remaining, 1.0)):
                    if proc.poll() is not None and not sel.select(timeout=0):
                        break
                    continue
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        try:
                            result.events.append(json.loads(line))
                        except json.JSONDecodeError:
                            log.warning("unreadable event from the sandbox: %.200r", line)
                if result.events and result.events[-1].get("event") == "done":
                    finished = True
                    break
        finally:
            sel.close()
        if result.timed_out or finished:
            # After "done" the kernel is already shut down and everything is out;
            # no need to wait for the interpreter and the sandbox to wind down.
            self._kill(proc)
            ready = result.last("ready")
            if result.timed_out and not self.enabled and ready and ready.get("kernel_pid"):
                # Without the sandbox the kernel leads its own session (jupyter_client
                # starts it so): stop it and whatever it started.
                try:
                    os.killpg(int(ready["kernel_pid"]), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            result.returncode = proc.wait(timeout=max(5.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            result.timed_out = True
            self._kill(proc)
            result.returncode = proc.wait()

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        # bubblewrap leads its own session; killing it kills the sandbox's init
        # (--die-with-parent), and the kernel then kills every process in the PID
        # namespace.  Without the sandbox, the session is all we have.
        for target in (lambda: os.killpg(proc.pid, signal.SIGKILL),
                       lambda: proc.kill()):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _course_utils_dir() -> str:
    """The installed ``course_utils`` package, which the kernel imports before any
    file of the submission can shadow it (see ``_runner.ipykernel_main``)."""
    import course_utils

    return os.path.realpath(os.path.dirname(course_utils.__file__))


def _readable_copy(src: Path, dst: Path, exclude=()) -> Path:
    """Copy ``src`` to ``dst`` (symlinks kept as links, top-level names in ``exclude``
    left out), directories 0755, files 0644."""
    run_tmp = dst.parent
    run_tmp.chmod(0o755)
    skip = set(exclude)
    shutil.copytree(src, dst, symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in skip and Path(d) == src])
    for dirpath, dirnames, filenames in os.walk(dst):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o644)
    return dst


def _tail(path: Path, n: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - n))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
