"""``make lab`` in a real browser: JupyterLab with the course kernel, 00_setup's first cell run.

Debian's Chromium driven by Playwright (never a downloaded browser). The notebook is a copy
in a temporary folder (``LAB_DIR``), so nothing is written into notebooks/.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from course_utils.classroom import free_port

from test_classroom import CHROMIUM, CHROMIUM_ARGS, _browser_reason

pytestmark = [pytest.mark.slow, pytest.mark.browser]
ROOT = Path(__file__).resolve().parents[1]


def test_make_lab_runs_00_setup_in_the_browser(tmp_path):
    reason = _browser_reason() or (None if shutil.which("make") else "make is missing")
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    work = tmp_path / "notebooks"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / "00_setup.ipynb", work)
    port, token = free_port(), secrets.token_hex(16)
    shots = Path(os.environ.get("COURSE_CLASSROOM_SHOTS") or tmp_path)
    args = (f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} "
            f"--IdentityProvider.token={token} --LabApp.news_url=None"
            + (" --allow-root" if os.geteuid() == 0 else ""))
    proc = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_DIR={work}",
                             f"LAB_ARGS={args}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(120_000)
            url = f"http://127.0.0.1:{port}/lab/tree/00_setup.ipynb?token={token}"
            deadline = time.monotonic() + 180
            while True:
                try:
                    page.goto(url)
                    break
                except Exception:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"make lab did not serve {url}:\n"
                                             f"{proc.stdout.read() if proc.poll() is not None else ''}")
                    time.sleep(1)
            try:
                kernel = page.locator(".jp-Toolbar-kernelName",
                                      has_text="Transfer course (.venv)").first
                kernel.wait_for()
                # a cell run before the kernel is connected is not executed: wait for Idle
                page.locator("#jp-main-statusbar", has_text="Transfer course (.venv) | Idle"
                             ).wait_for()
                page.locator(".jp-Notebook .jp-CodeCell").first.click()
                page.keyboard.press("Shift+Enter")
                prompt = page.locator(".jp-Notebook .jp-CodeCell").first.locator(
                    ".jp-InputPrompt")
                page.wait_for_function(
                    "el => el.textContent.includes('[1]')", arg=prompt.element_handle())
                page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], "
                                       "#jp-main-statusbar >> text=Idle")
                page.screenshot(path=str(shots / "05_make_lab_00_setup.png"))
            except Exception:
                page.screenshot(path=str(shots / "failed_make_lab.png"))
                raise
            finally:
                browser.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    spec = ROOT / ".venv" / "share" / "jupyter" / "kernels" / "python3" / "kernel.json"
    assert "Transfer course (.venv)" in spec.read_text()
