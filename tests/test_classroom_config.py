"""The hub configuration and ``course classroom`` without a hub: runs anywhere, no root.

(tests/test_classroom.py runs the real hub; these pin what its configuration decides.)
"""
from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets.config.loader import PyFileConfigLoader

from course_utils import classroom as cl
from course_utils.cli import main


def _load(monkeypatch, tmp_path, exchange_mode=0o1777, **env):
    exchange = tmp_path / "exchange"
    exchange.mkdir(exist_ok=True)
    os.chmod(exchange, exchange_mode)
    settings = {"COURSE_VENV": str(cl.venv_bin().parent), "COURSE_HUB_STATE": str(tmp_path / "hub"),
                "NBGRADER_EXCHANGE": str(exchange), "COURSE_HUB_URL": "http://127.0.0.1:18123",
                "COURSE_STUDENT_GROUP": "some-students", **env}
    for k, v in settings.items():
        monkeypatch.setenv(k, v)
    loader = PyFileConfigLoader(cl.HUB_CONFIG.name, path=str(cl.HUB_CONFIG.parent))
    return loader.load_config()


needs_proxy = pytest.mark.skipif(not os.access(cl.PROXY, os.X_OK),
                                 reason="configurable-http-proxy is not installed "
                                 "('make classroom-deps')")


@needs_proxy
def test_config_sets_up_the_course_hub(monkeypatch, tmp_path):
    c = _load(monkeypatch, tmp_path)
    venv = cl.venv_bin().parent
    assert c.JupyterHub.bind_url == "http://127.0.0.1:18123"
    assert c.JupyterHub.hub_ip == "127.0.0.1" and c.Spawner.ip == "127.0.0.1"
    assert c.JupyterHub.authenticator_class == "pam"
    assert c.PAMAuthenticator.allowed_groups == {"some-students", "transfer-instructors"}
    assert c.JupyterHub.spawner_class == "localprocess"
    assert c.Spawner.cmd == [str(venv / "bin" / "jupyterhub-singleuser")]
    assert c.ConfigurableHTTPProxy.command == [str(cl.PROXY)]
    assert c.JupyterHub.db_url == f"sqlite:///{tmp_path / 'hub' / 'jupyterhub.sqlite'}"
    spec = json.loads((tmp_path / "hub/share/jupyter/kernels/python3/kernel.json").read_text())
    assert spec["display_name"] == "Transfer course (.venv)"
    assert spec["argv"][0] == str(venv / "bin" / "python")


@needs_proxy
def test_each_role_gets_its_nbgrader_settings(monkeypatch, tmp_path):
    me = pwd.getpwuid(os.getuid()).pw_name
    my_group = grp.getgrgid(pwd.getpwuid(os.getuid()).pw_gid).gr_name
    c = _load(monkeypatch, tmp_path, COURSE_INSTRUCTOR_GROUP=my_group)
    hook = c.Spawner.pre_spawn_hook
    log = SimpleNamespace(warning=lambda *a: None)
    spawner = SimpleNamespace(user=SimpleNamespace(name=me), environment={}, log=log)
    hook(spawner)
    env = spawner.environment
    assert env["JUPYTER_CONFIG_PATH"] == str(cl.DEPLOY / "instructor")
    assert env["NBGRADER_EXCHANGE"] == str(tmp_path / "exchange")
    assert env["PATH"].startswith(str(cl.venv_bin()))
    assert env["JUPYTER_PATH"] == str(tmp_path / "hub" / "share" / "jupyter")
    c = _load(monkeypatch, tmp_path, COURSE_INSTRUCTOR_GROUP="no-such-group-here")
    spawner = SimpleNamespace(user=SimpleNamespace(name=me), environment={}, log=log)
    c.Spawner.pre_spawn_hook(spawner)
    assert spawner.environment["JUPYTER_CONFIG_PATH"] == str(cl.DEPLOY / "student")


def test_students_get_no_formgrader():
    student = cl.DEPLOY / "student"
    server = json.loads((student / "jupyter_server_config.json").read_text())
    ext = server["ServerApp"]["jpserver_extensions"]
    assert ext["nbgrader.server_extensions.formgrader"] is False
    assert ext["nbgrader.server_extensions.assignment_list"] is True
    page = json.loads((student / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"]["@jupyter/nbgrader:formgrader"] is True
    assert page["disabledExtensions"]["@jupyter/nbgrader:create-assignment"] is True
    assert "course_id = \"transfer-learning\"" in (student / "nbgrader_config.py").read_text()


@needs_proxy
def test_config_refuses_an_exchange_others_could_tamper_with(monkeypatch, tmp_path):
    with pytest.raises(SystemExit, match="mode 1777"):
        _load(monkeypatch, tmp_path, exchange_mode=0o777)


def test_config_names_the_missing_environment(monkeypatch, tmp_path):
    with pytest.raises(SystemExit, match="make classroom-deps"):
        _load(monkeypatch, tmp_path, COURSE_VENV=str(tmp_path / "no-venv"))


def test_private_folders_are_found():
    base = Path(tempfile.mkdtemp(prefix="course-private-"))  # pytest's own tmp is 0700
    try:
        os.chmod(base, 0o755)
        shut = base / "private"
        shut.mkdir(mode=0o700)
        (shut / "python").write_text("")
        os.chmod(shut / "python", 0o755)
        assert not cl.world_usable(shut / "python")
        os.chmod(shut, 0o711)  # enter, not list: enough
        assert cl.world_usable(shut / "python")
        os.chmod(shut / "python", 0o700)
        assert not cl.world_usable(shut / "python")
    finally:
        shutil.rmtree(base)


def test_classroom_commands_say_they_need_root(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["classroom", "add-student", "ann"]) == 2
    err = capsys.readouterr().err
    assert "needs root" in err and "ann" in err
    assert main(["classroom", "add-student", "Bad Name"]) == 2
    assert "needs root" in capsys.readouterr().err


def test_account_names_are_checked(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(cl.ClassroomError, match="not a valid Unix user name"):
        cl.add_student("Ann Smith")


def test_hub_refuses_to_start_without_its_parts(monkeypatch, tmp_path):
    monkeypatch.setattr(cl, "missing_components", lambda: ["root (...)"])
    with pytest.raises(cl.ClassroomError, match="missing: root"):
        cl.Hub(state=tmp_path, exchange=tmp_path).start()
