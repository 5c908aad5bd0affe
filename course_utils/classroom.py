"""The course on a shared JupyterHub: accounts, the nbgrader exchange, the hub process.

``course classroom ...`` (run as root) and the classroom tests use these functions, so the
tests run exactly what an instructor runs:

* :func:`add_student` / :func:`add_instructor`: a real Unix account with a password, home
  directory mode 0700, in the course's student / instructor group; an instructor also gets
  ``~/transfer-learning``, a private copy of the repository's ``assignments/``.
* :func:`prepare_exchange`: the nbgrader exchange root, mode 1777.
* :class:`Hub`: ``jupyterhub -f deploy/jupyterhub/jupyterhub_config.py`` as a child process,
  waited for until it answers; :meth:`Hub.stop` ends it and every server it started.
* :func:`as_user`: run a command as a course account (what the person types in a terminal).
* :class:`HubSession`: a person's HTTP session: the hub's login form, their server, the REST
  handlers of nbgrader's Assignments panel (list, fetch, submit, fetch_feedback) and the
  Jupyter contents API.

Everything here needs root (accounts, PAM, starting servers as other users); the functions
say so with :class:`ClassroomError` instead of failing half-way.
"""
from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ClassroomError", "REPO", "HUB_CONFIG", "COURSE_ID", "COURSE_DIRNAME",
           "STUDENT_GROUP", "INSTRUCTOR_GROUP", "missing_components", "ensure_group",
           "add_student", "add_instructor", "remove_user", "prepare_exchange", "as_user",
           "free_port", "world_usable", "base_python", "private_folders",
           "grant_python_access", "revoke_python_access", "Hub", "HubSession", "Account"]

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "jupyterhub"
HUB_CONFIG = DEPLOY / "jupyterhub_config.py"
PROXY = DEPLOY / "node_modules" / ".bin" / "configurable-http-proxy"
COURSE_ID = "transfer-learning"
COURSE_DIRNAME = "transfer-learning"
STUDENT_GROUP = "transfer-students"
INSTRUCTOR_GROUP = "transfer-instructors"
#: what an instructor's course directory leaves out of the repository's assignments/
_NOT_COPIED = ("release", "submitted", "autograded", "feedback", "gradebook.db", "*.csv",
               ".ipynb_checkpoints", "__pycache__")


class ClassroomError(RuntimeError):
    """The classroom cannot be set up as asked; the message says what to do."""


@dataclass
class Account:
    """A course account made by :func:`add_student` or :func:`add_instructor`."""

    name: str
    password: str
    home: Path
    role: str  # "student" or "instructor"
    course_dir: Path | None = None  # instructors: ~/transfer-learning

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.name).pw_uid


def venv_bin() -> Path:
    """The bin/ folder of the environment running this code (the course's .venv)."""
    return Path(sys.executable).parent


def world_usable(path: str | os.PathLike) -> bool:
    """Whether any account can reach ``path``: every folder on the way searchable (o+x)
    and the file itself readable and, for a program, executable by others."""
    p = Path(os.path.realpath(path))
    for d in [*reversed(p.parents)]:
        if not os.stat(d).st_mode & 0o001:
            return False
    mode = os.stat(p).st_mode
    return bool(mode & 0o004) and (not (mode & 0o100) or bool(mode & 0o001))


def base_python(venv: str | os.PathLike | None = None) -> Path:
    """The interpreter a virtual environment runs (``home`` in its ``pyvenv.cfg``)."""
    venv = Path(venv or venv_bin().parent)
    cfg = {k.strip(): v.strip() for k, _, v in
           (line.partition("=") for line in (venv / "pyvenv.cfg").read_text().splitlines())}
    if "home" not in cfg:  # not a venv: this interpreter itself
        return Path(os.path.realpath(sys.executable))
    return Path(os.path.realpath(Path(cfg["home"]) / Path(sys.executable).name))


def private_folders(venv: str | os.PathLike | None = None) -> list[Path]:
    """Folders on the way to the course environment's interpreter (and its standard
    library), the environment and this repository (``course_utils`` is installed from it,
    ``deploy/`` holds the servers' settings) that other accounts cannot enter, e.g. ``/root``
    for a pyenv Python. Students' servers cannot start while this list is not empty."""
    venv = Path(venv or venv_bin().parent)
    out = []
    for target in (base_python(venv), Path(os.path.realpath(venv)) / "pyvenv.cfg",
                   REPO / "course_utils" / "__init__.py", DEPLOY / "jupyterhub_config.py"):
        for d in reversed(target.parents):
            if not os.stat(d).st_mode & 0o001 and d not in out:
                out.append(d)
    return out


def _acl(args) -> None:
    if shutil.which("setfacl") is None:
        raise ClassroomError("setfacl is missing: 'apt-get install acl' (make classroom-deps)")
    _run(["setfacl", *args])


def grant_python_access(groups, venv=None) -> list[Path]:
    """Let the members of ``groups`` *enter* (search permission only, not list) each
    private folder on the way to the course's interpreter, with a POSIX ACL; returns the
    folders. Undo with :func:`revoke_python_access`. Nothing else about those folders
    changes: files in them stay as readable as their own modes say."""
    _need_root("granting access to the course's Python")
    folders = private_folders(venv)
    for d in folders:
        for g in groups:
            _acl(["-m", f"g:{g}:x", str(d)])
    return folders


def revoke_python_access(groups, folders) -> None:
    """Remove the ACL entries :func:`grant_python_access` added (and the ACL itself when
    nothing else is left in it)."""
    for d in folders:
        for g in groups:
            subprocess.run(["setfacl", "-x", f"g:{g}", str(d)], capture_output=True)
        res = subprocess.run(["getfacl", "-c", "-s", str(d)], capture_output=True, text=True)
        left = [line for line in res.stdout.splitlines()
                if line and not line.startswith(("user::", "group::", "other::", "mask::"))]
        if res.stdout and not left:
            subprocess.run(["setfacl", "-b", str(d)], capture_output=True)


def missing_components() -> list[str]:
    """What the classroom needs and this machine lacks, each with how to get it."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the hub logs people in with PAM and starts servers as their "
                       "Unix accounts): run as root")
    for tool in ("useradd", "userdel", "groupadd", "chpasswd", "runuser"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian package passwd/util-linux)")
    if not (venv_bin() / "jupyterhub").exists():
        missing.append(f"jupyterhub in {venv_bin()} ('make classroom-deps')")
    if not os.access(PROXY, os.X_OK):
        missing.append(f"configurable-http-proxy at {PROXY} ('make classroom-deps', needs npm)")
    return missing


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise ClassroomError(f"{' '.join(map(str, cmd))} failed ({res.returncode}): "
                             f"{(res.stderr or res.stdout).strip()}")
    return res


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise ClassroomError(f"{what} needs root (it changes Unix accounts); run it with sudo")


def ensure_group(name: str) -> None:
    """Create the Unix group ``name`` unless it exists."""
    _need_root(f"creating the group {name}")
    try:
        grp.getgrnam(name)
    except KeyError:
        _run(["groupadd", name])


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _make_account(name: str, group: str, password: str | None, role: str) -> Account:
    _need_root(f"adding the account {name}")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", name):
        raise ClassroomError(f"account name {name!r} is not a valid Unix user name: use "
                             "lower-case letters, digits, '-' and '_' (at most 32)")
    ensure_group(group)
    if _user_exists(name):
        _run(["usermod", "-a", "-G", group, name])
    else:
        _run(["useradd", "--create-home", "--shell", "/bin/bash", "--groups", group, name])
    password = password or secrets.token_urlsafe(12)
    _run(["chpasswd"], input=f"{name}:{password}\n")
    home = Path(pwd.getpwnam(name).pw_dir)
    os.chmod(home, 0o700)  # Debian's default (0755) lets every student read every other's work
    return Account(name=name, password=password, home=home, role=role)


def add_student(name: str, password: str | None = None, *, group: str = STUDENT_GROUP) -> Account:
    """A student account: Unix user ``name`` in ``group`` with ``password`` (random when
    None), home directory mode 0700. An existing user is added to the group."""
    return _make_account(name, group, password, "student")


def add_instructor(name: str, password: str | None = None, *, group: str = INSTRUCTOR_GROUP,
                   assignments: str | os.PathLike = REPO / "assignments") -> Account:
    """An instructor account, plus ``~/transfer-learning``: a copy of ``assignments``
    (``source/`` and ``nbgrader_config.py``; no gradebook, releases or submissions) owned
    by the instructor, mode 0700, where the formgrader and the nbgrader commands work.
    An existing course directory is left as it is."""
    acct = _make_account(name, group, password, "instructor")
    course = acct.home / COURSE_DIRNAME
    if not course.exists():
        shutil.copytree(assignments, course, ignore=shutil.ignore_patterns(*_NOT_COPIED))
        _run(["chown", "-R", f"{name}:", str(course)])
    os.chmod(course, 0o700)
    acct.course_dir = course
    return acct


def remove_user(name: str) -> None:
    """Remove the account ``name``, its home directory and its processes."""
    _need_root(f"removing the account {name}")
    if not _user_exists(name):
        return
    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
    for _ in range(50):
        res = subprocess.run(["userdel", "--remove", name], capture_output=True, text=True)
        if res.returncode in (0, 12):  # 12: home removed with a warning (no mail spool)
            return
        if "currently used by process" not in res.stderr:
            raise ClassroomError(f"userdel {name} failed: {res.stderr.strip()}")
        time.sleep(0.1)
    raise ClassroomError(f"userdel {name}: processes of the user keep running")


def prepare_exchange(root: str | os.PathLike) -> Path:
    """The nbgrader exchange root: created if needed, owned by root, mode 1777: everyone
    may create a course there (the instructor's release does), nobody may rename or remove
    another user's course folder (the sticky bit)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(root, 0, 0)
    os.chmod(root, 0o1777)
    return root


def as_user(user: str, cmd, *, cwd=None, env: dict | None = None, check: bool = True,
            timeout: float | None = 600) -> subprocess.CompletedProcess:
    """Run ``cmd`` as the Unix account ``user`` with a clean login-like environment (HOME,
    USER, the course's .venv first on PATH) plus ``env``."""
    pw = pwd.getpwnam(user)
    base = {"HOME": pw.pw_dir, "USER": user, "LOGNAME": user, "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
            "PATH": f"{venv_bin()}:/usr/local/bin:/usr/bin:/bin"}
    base.update(env or {})
    full = ["runuser", "-u", user, "--", "env", "-i",
            *[f"{k}={v}" for k, v in base.items()], *map(str, cmd)]
    res = subprocess.run(full, cwd=cwd or pw.pw_dir, capture_output=True, text=True,
                         timeout=timeout)
    if check and res.returncode != 0:
        raise ClassroomError(f"as {user}: {' '.join(map(str, cmd))} failed ({res.returncode}):\n"
                             f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Hub:
    """The course's JupyterHub as a child process (root), configured by
    ``deploy/jupyterhub/jupyterhub_config.py`` through environment variables."""

    state: Path
    exchange: Path
    port: int = 8000
    student_group: str = STUDENT_GROUP
    instructor_group: str = INSTRUCTOR_GROUP
    log_path: Path | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "NBGRADER"))}
        env.update({
            "COURSE_HUB_URL": self.url,
            "COURSE_HUB_API_PORT": str(free_port()),
            "COURSE_PROXY_API_PORT": str(free_port()),
            "COURSE_HUB_STATE": str(self.state),
            "NBGRADER_EXCHANGE": str(self.exchange),
            "COURSE_STUDENT_GROUP": self.student_group,
            "COURSE_INSTRUCTOR_GROUP": self.instructor_group,
            "COURSE_VENV": str(venv_bin().parent),
            "PATH": f"{venv_bin()}:{env.get('PATH', '/usr/bin:/bin')}",
        })
        return env

    def start(self, timeout: float = 120) -> Hub:
        missing = missing_components()
        if missing:
            raise ClassroomError("the hub cannot start here; missing: " + "; ".join(missing))
        self.state.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_path or self.state / "jupyterhub.log"
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(venv_bin() / "jupyterhub"), "-f", str(HUB_CONFIG)], cwd=self.state,
            env=self.environment(), stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True)
        logf.close()
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ClassroomError(f"jupyterhub exited with {self.proc.returncode}; its log "
                                     f"({self.log_path}) ends:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/hub/api", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise ClassroomError(f"jupyterhub did not answer on {self.url} within {timeout:.0f} s; "
                             f"its log ends:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the hub (it stops the proxy and every single-user server), then make
        sure nothing of its process group is left."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> Hub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class HubSession:
    """One person on the hub over HTTP, as their browser would be: the login form, their
    single-user server, the Assignments panel's REST calls and the contents API."""

    def __init__(self, hub_url: str, user: str, password: str):
        import requests

        self.hub_url, self.user, self.password = hub_url.rstrip("/"), user, password
        self.http = requests.Session()
        self.base = f"{self.hub_url}/user/{user}"

    # -- the hub --------------------------------------------------------------------------
    def login(self):
        """Fill in and post the hub's login form; returns the response (raises on a
        rejected login)."""
        page = self.http.get(f"{self.hub_url}/hub/login", timeout=30)
        page.raise_for_status()
        m = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text)
        form = {"username": self.user, "password": self.password}
        if m:
            form["_xsrf"] = m.group(1)
        r = self.http.post(f"{self.hub_url}/hub/login?next=", data=form, timeout=60,
                           allow_redirects=False)
        if r.status_code != 302:
            raise ClassroomError(f"login of {self.user} rejected by the hub "
                                 f"(HTTP {r.status_code})")
        return r

    def start_server(self, timeout: float = 180) -> float:
        """Ask the hub for this user's server (GET /hub/spawn/USER, what the home page's
        Start button does) and wait until it answers through the proxy; returns seconds."""
        t0 = time.monotonic()
        self.http.get(f"{self.hub_url}/hub/spawn/{self.user}", timeout=60)
        while time.monotonic() - t0 < timeout:
            # the lab page: through the server's OAuth redirects to the hub and back, which
            # also set the server's login cookie and its _xsrf cookie
            r = self.http.get(f"{self.base}/lab", timeout=60)
            if r.ok and r.url.split("?")[0].rstrip("/") == f"{self.base}/lab":
                return time.monotonic() - t0
            time.sleep(0.5)
        raise ClassroomError(f"the server of {self.user} did not start within {timeout:.0f} s")

    # -- the single-user server -------------------------------------------------------------
    def _xsrf(self) -> dict[str, str]:
        token = None
        for cookie in self.http.cookies:
            if cookie.name == "_xsrf" and (cookie.path or "/").startswith(f"/user/{self.user}"):
                token = cookie.value
        token = token or self.http.cookies.get("_xsrf")
        return {"X-XSRFToken": token} if token else {}

    def get(self, path: str, **kw):
        return self.http.get(f"{self.base}/{path.lstrip('/')}", timeout=120, **kw)

    def post(self, path: str, **kw):
        headers = {**self._xsrf(), **kw.pop("headers", {})}
        return self.http.post(f"{self.base}/{path.lstrip('/')}", headers=headers, timeout=300,
                              **kw)

    def put(self, path: str, **kw):
        headers = {**self._xsrf(), **kw.pop("headers", {})}
        return self.http.put(f"{self.base}/{path.lstrip('/')}", headers=headers, timeout=120,
                             **kw)

    @staticmethod
    def _result(r) -> list | dict:
        r.raise_for_status()
        body = r.json()
        if isinstance(body, dict) and body.get("success") is False:
            raise ClassroomError(f"nbgrader answered: {body.get('value')}")
        return body.get("value", body) if isinstance(body, dict) else body

    def assignments(self, course_id: str = COURSE_ID) -> list[dict]:
        """GET /assignments: what the Assignments panel lists (released, fetched, submitted)."""
        return self._result(self.get("assignments", params={"course_id": course_id}))

    def assignment_action(self, action: str, assignment: str, course_id: str = COURSE_ID):
        """POST /assignments/{fetch,submit,fetch_feedback}, the panel's buttons."""
        return self._result(self.post(f"assignments/{action}",
                                      data={"assignment_id": assignment, "course_id": course_id}))

    def read_notebook(self, path: str) -> dict:
        r = self.get(f"api/contents/{path}", params={"content": 1})
        r.raise_for_status()
        return r.json()["content"]

    def write_notebook(self, path: str, nb: dict) -> None:
        r = self.put(f"api/contents/{path}", data=json.dumps(
            {"type": "notebook", "format": "json", "content": nb}))
        r.raise_for_status()

    def stop_server(self) -> None:
        self.http.delete(f"{self.hub_url}/hub/api/users/{self.user}/server",
                         headers={"X-XSRFToken": self.http.cookies.get("_xsrf", path="/hub/")
                                  or ""}, timeout=60)


# -- the command line: course classroom ... -------------------------------------------------
DEMO_INSTRUCTOR = "demo-instructor"
DEMO_STUDENTS = ("demo-student1", "demo-student2", "demo-student3")


def _print_account(acct: Account, shown_password: bool) -> None:
    extra = f", course directory {acct.course_dir}" if acct.course_dir else ""
    pw = f"password {acct.password}" if shown_password else "password as given"
    print(f"{acct.role:<10} {acct.name:<18} {pw}{extra}")


def _cmd_add(args) -> int:
    make = add_instructor if args.classroom_cmd == "add-instructor" else add_student
    group = args.group or (INSTRUCTOR_GROUP if make is add_instructor else STUDENT_GROUP)
    for name in args.names:
        _print_account(make(name, args.password, group=group), args.password is None)
    return 0


def _serve(args, accounts=()) -> int:
    exchange = prepare_exchange(args.exchange)
    groups = [STUDENT_GROUP, INSTRUCTOR_GROUP]
    for g in groups:
        ensure_group(g)
    folders = private_folders()
    granted = []
    if folders:
        if not args.grant_python_access:
            raise ClassroomError(
                f"the course's Python ({base_python()}) lies in {', '.join(map(str, folders))}, "
                "which other accounts cannot enter, so no student's server could start. Build "
                ".venv from a Python outside private folders (make PYTHON=/path/to/python3.11), "
                "or pass --grant-python-access to let the course groups enter those folders "
                "(search permission only, a POSIX ACL removed when the hub stops)")
        granted = grant_python_access(groups)
        print(f"granted {', '.join(groups)} search permission on {', '.join(map(str, granted))}")
    hub = Hub(state=Path(args.state), exchange=exchange, port=args.port)

    def _stop(signum, frame):  # `kill`, systemd, timeout: clean up as for Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        hub.start()
        print(f"\nJupyterHub for the course is running at {hub.url}/ (log: {hub.log_path})")
        print(f"exchange: {exchange}   hub state: {args.state}")
        for acct in accounts:
            _print_account(acct, True)
        print("Ctrl-C stops the hub and every server it started.")
        while hub.proc.poll() is None:
            time.sleep(1)
        print(f"jupyterhub exited ({hub.proc.returncode}); its log ends:\n{hub.log_tail()}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        hub.stop()
        revoke_python_access(groups, granted)
        signal.signal(signal.SIGTERM, previous)


def _cmd_up(args) -> int:
    return _serve(args)


def _cmd_demo(args) -> int:
    accounts = [add_instructor(DEMO_INSTRUCTOR)] + [add_student(n) for n in DEMO_STUDENTS]
    args.grant_python_access = True
    return _serve(args, accounts)


def _cmd_remove(args) -> int:
    for name in args.names:
        remove_user(name)
        print(f"removed {name} and its home directory")
    return 0


def add_parser(sub) -> None:
    """``course classroom ...`` under the ``course`` command's sub-parsers."""
    p = sub.add_parser("classroom", help="run the course on a JupyterHub (as root)",
                       description="The course on one machine's JupyterHub: Unix accounts, the "
                       "nbgrader exchange, the hub (deploy/jupyterhub/jupyterhub_config.py).")
    csub = p.add_subparsers(dest="classroom_cmd", required=True, metavar="ACTION")

    def hub_options(q):
        q.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
        q.add_argument("--exchange", default="/srv/nbgrader/exchange",
                       help="the nbgrader exchange (default /srv/nbgrader/exchange)")
        q.add_argument("--state", default="/srv/transfer-course/hub",
                       help="hub database and secrets (default /srv/transfer-course/hub)")

    up = csub.add_parser("up", help="start the hub in the foreground")
    hub_options(up)
    up.add_argument("--grant-python-access", action="store_true",
                    help="let the course groups enter private folders on the way to the "
                    "course's Python (e.g. /root for pyenv) while the hub runs")
    up.set_defaults(func=_cmd_up)
    demo = csub.add_parser("demo", help="demo accounts (demo-instructor, demo-student1..3, "
                           "random passwords printed) and the hub")
    hub_options(demo)
    demo.set_defaults(func=_cmd_demo)
    for action, role in (("add-student", "student"), ("add-instructor", "instructor")):
        q = csub.add_parser(action, help=f"add {role} accounts (Unix users)")
        q.add_argument("names", nargs="+", metavar="NAME")
        q.add_argument("--password", default=None, help="password (default: random, printed)")
        q.add_argument("--group", default=None, help=f"Unix group (default: the {role}s' group)")
        q.set_defaults(func=_cmd_add)
    rm = csub.add_parser("remove", help="remove accounts and their home directories")
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.set_defaults(func=_cmd_remove)


def cli(args) -> int:
    """Run a ``course classroom`` action; errors are printed, not raised."""
    try:
        return args.func(args)
    except ClassroomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
