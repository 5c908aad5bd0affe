"""JupyterHub for one machine running the transfer-learning course.

Start it as root (it logs people in with PAM and starts each person's JupyterLab as their
own Unix account):

    sudo .venv/bin/course classroom up          # or: make classroom (demo accounts)

or by hand: ``sudo .venv/bin/jupyterhub -f deploy/jupyterhub/jupyterhub_config.py``.

* **Accounts**: real Unix accounts, checked with PAM. Members of the student group
  (``transfer-students``) and of the instructor group (``transfer-instructors``) may log in;
  nobody else. ``course classroom add-student NAME`` makes one.
* **Single-user environment**: the course's ``.venv`` (its ``jupyterhub-singleuser``,
  JupyterLab 4, nbgrader and ``course_utils``), with the kernel "Transfer course (.venv)".
* **nbgrader**: every server uses the exchange at ``$NBGRADER_EXCHANGE``. Students get the
  Assignments panel only; instructors also get the formgrader and Create Assignment, on the
  course directory ``~/transfer-learning`` (``course classroom add-instructor`` copies
  ``assignments/`` there, readable by the instructor only).

Settings come from the environment so one file serves a class and the tests:

==========================  ============================================================
``COURSE_HUB_URL``          public URL the proxy listens on (``http://127.0.0.1:8000``)
``COURSE_HUB_API_PORT``     loopback port of the hub itself (8081)
``COURSE_PROXY_API_PORT``   loopback port of the proxy's REST API (8001)
``COURSE_HUB_STATE``        hub database, cookie secret, kernel spec (``/srv/transfer-course/hub``)
``NBGRADER_EXCHANGE``       the nbgrader exchange (``/srv/nbgrader/exchange``)
``COURSE_STUDENT_GROUP``    Unix group of the students (``transfer-students``)
``COURSE_INSTRUCTOR_GROUP`` Unix group of the instructors (``transfer-instructors``)
``COURSE_VENV``             the course environment (``.venv`` next to ``deploy/``)
==========================  ============================================================
"""
import grp
import json
import os
import pwd
import stat

c = get_config()  # noqa: F821  (provided by traitlets when JupyterHub loads this file)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
VENV = os.path.abspath(os.environ.get("COURSE_VENV", os.path.join(REPO, ".venv")))
STATE = os.path.abspath(os.environ.get("COURSE_HUB_STATE", "/srv/transfer-course/hub"))
EXCHANGE = os.path.abspath(os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange"))
STUDENT_GROUP = os.environ.get("COURSE_STUDENT_GROUP", "transfer-students")
INSTRUCTOR_GROUP = os.environ.get("COURSE_INSTRUCTOR_GROUP", "transfer-instructors")
COURSE_DIRNAME = "transfer-learning"  # the instructor's course directory, under their home
PROXY = os.path.join(HERE, "node_modules", ".bin", "configurable-http-proxy")


def _require(ok, message):
    if not ok:
        raise SystemExit(f"jupyterhub_config.py: {message}")


_require(os.access(os.path.join(VENV, "bin", "jupyterhub-singleuser"), os.X_OK),
         f"{VENV}/bin/jupyterhub-singleuser is missing: run 'make classroom-deps' (or set "
         "COURSE_VENV to the course's virtual environment)")
_require(os.access(PROXY, os.X_OK),
         f"{PROXY} is missing: run 'make classroom-deps' (npm installs configurable-http-proxy)")
_require(os.path.isdir(EXCHANGE) and os.stat(EXCHANGE).st_mode & 0o1777 == 0o1777,
         f"the nbgrader exchange {EXCHANGE} must exist with mode 1777 (everyone may create a "
         "course there, nobody may remove another's); 'course classroom up' creates it")

# -- network: the proxy is the only public port; the hub and its API stay on loopback ------
c.JupyterHub.bind_url = os.environ.get("COURSE_HUB_URL", "http://127.0.0.1:8000")
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("COURSE_HUB_API_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:%s" % os.environ.get(
    "COURSE_PROXY_API_PORT", "8001")
c.ConfigurableHTTPProxy.command = [PROXY]
c.ConfigurableHTTPProxy.pid_file = os.path.join(STATE, "proxy.pid")

# -- state: database and cookie secret readable by root only --------------------------------
os.makedirs(STATE, mode=0o755, exist_ok=True)
c.JupyterHub.db_url = "sqlite:///" + os.path.join(STATE, "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.path.join(STATE, "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = os.path.join(STATE, "jupyterhub.pid")

# -- who may log in: PAM (the Unix passwords), members of the two groups --------------------
c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.allowed_groups = {STUDENT_GROUP, INSTRUCTOR_GROUP}
c.PAMAuthenticator.open_sessions = False  # no systemd-logind session per spawn in a container

# -- the single-user servers: the course's .venv, started as the user, on loopback --------
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [os.path.join(VENV, "bin", "jupyterhub-singleuser")]
c.Spawner.ip = "127.0.0.1"
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.start_timeout = 120  # JupyterLab + nbgrader on two busy cores
c.Spawner.http_timeout = 120

# The course kernel, visible to every single-user server (JUPYTER_PATH below): the notebooks
# and assignments ask for "python3", which is the .venv's own Python, shown under the course's
# name (one entry in the launcher).
KERNELS = os.path.join(STATE, "share", "jupyter", "kernels")
for name in ("python3",):
    os.makedirs(os.path.join(KERNELS, name), mode=0o755, exist_ok=True)
    with open(os.path.join(KERNELS, name, "kernel.json"), "w") as fh:
        json.dump({"argv": [os.path.join(VENV, "bin", "python"), "-m", "ipykernel_launcher",
                            "-f", "{connection_file}"],
                   "display_name": "Transfer course (.venv)", "language": "python",
                   "metadata": {"debugger": True}}, fh, indent=1)
    os.chmod(os.path.join(KERNELS, name, "kernel.json"), 0o644)
for d in (os.path.join(STATE, "share"), os.path.join(STATE, "share", "jupyter"), KERNELS):
    os.chmod(d, 0o755)


def _members(group):
    try:
        g = grp.getgrnam(group)
    except KeyError:
        return set()
    return set(g.gr_mem) | {p.pw_name for p in pwd.getpwall() if p.pw_gid == g.gr_gid}


def is_instructor(username):
    return username in _members(INSTRUCTOR_GROUP)


def pre_spawn_hook(spawner):
    """Each server gets the course environment and the nbgrader settings of its role."""
    role = "instructor" if is_instructor(spawner.user.name) else "student"
    spawner.environment = {**spawner.environment, **{
        "PATH": os.path.join(VENV, "bin") + ":/usr/local/bin:/usr/bin:/bin",
        "NBGRADER_EXCHANGE": EXCHANGE,
        "COURSE_DIRNAME": COURSE_DIRNAME,
        # role config first: nbgrader_config.py, jupyter_server_config.json, labconfig/
        "JUPYTER_CONFIG_PATH": os.path.join(HERE, role),
        "JUPYTER_PATH": os.path.join(STATE, "share", "jupyter"),
        "COURSE_CLASSROOM_ROLE": role,
    }}
    home = pwd.getpwnam(spawner.user.name).pw_dir
    if os.path.isdir(home) and stat.S_IMODE(os.stat(home).st_mode) & 0o077:
        spawner.log.warning("home directory %s of %s is readable by others (mode %o); "
                            "'chmod 700 %s' keeps other users out of their work",
                            home, spawner.user.name, stat.S_IMODE(os.stat(home).st_mode), home)


c.Spawner.pre_spawn_hook = pre_spawn_hook
