"""The downloader against a loopback HTTP server: no network needed.

The server (``http.server`` on 127.0.0.1, port 0, in a thread) serves fixture archives
built in temporary folders: a good one, a truncated one, one with a ``../`` member, and
misbehaving endpoints (HTTP 500, connection cut mid-stream, a stall for the timeout).
"""
from __future__ import annotations

import hashlib
import http.server
import io
import socket
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from course_utils import download as dl


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, mode = route
        if mode == "500":
            self.send_error(500, "boom")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "cut":  # announce everything, send half, drop the connection
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "stall":
            time.sleep(1.5)
        for i in range(0, len(body), 4096):
            self.wfile.write(body[i:i + 4096])


class LoopbackServer:
    """``server.add("/name", data, mode)``; ``server.url("/name")``."""

    def __init__(self):
        handler = type("Handler", (_Handler,), {"routes": {}})
        self.routes = handler.routes
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def add(self, path: str, data: bytes, mode: str = "ok") -> str:
        self.routes[path] = (data, mode)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = LoopbackServer()
    yield s
    s.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


GOOD = make_zip({"pack/train/a/1.txt": b"one", "pack/test/a/2.txt": b"two" * 1000})


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_data_home_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "c"))
    assert dl.data_home("x") == tmp_path / "c" / "x"
    monkeypatch.delenv("COURSE_DATA")
    assert dl.data_home() == Path.home() / ".cache" / "course_utils"


def test_good_download_then_cached(server, tmp_path):
    url = server.add("/good.zip", GOOD)
    md5 = hashlib.md5(GOOD).hexdigest()
    path = dl.fetch("good.zip", url, tmp_path, sha256=sha256(GOOD), md5=md5, progress=True)
    assert path.read_bytes() == GOOD and leftovers(tmp_path) == ["good.zip"]
    server.routes.clear()  # a second call must not need the server
    assert dl.fetch("good.zip", url, tmp_path, sha256=sha256(GOOD), download=False) == path


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    url = server.add("/good.zip", GOOD)
    with pytest.raises(dl.ChecksumError, match="wrong checksum"):
        dl.fetch("good.zip", url, tmp_path, sha256="0" * 64, progress=False)
    assert leftovers(tmp_path) == []
    # sha256 right but the second published hash (md5) wrong: also refused and removed
    with pytest.raises(dl.ChecksumError, match="md5"):
        dl.fetch("good.zip", url, tmp_path, sha256=sha256(GOOD), md5="0" * 32, progress=False)
    assert leftovers(tmp_path) == []


def test_truncated_download_is_rejected(server, tmp_path):
    url = server.add("/trunc.zip", GOOD[: len(GOOD) // 2])
    with pytest.raises(dl.ChecksumError):
        dl.fetch("trunc.zip", url, tmp_path, sha256=sha256(GOOD), progress=False)
    assert leftovers(tmp_path) == []


def test_server_error_mid_stream_and_http_500(server, tmp_path):
    cut = server.add("/cut.zip", GOOD * 20, mode="cut")
    with pytest.raises(dl.DownloadError) as err:
        dl.fetch("cut.zip", cut, tmp_path, sha256=sha256(GOOD * 20), progress=False, dataset="toy")
    assert cut in str(err.value) and leftovers(tmp_path) == []
    bad = server.add("/bad.zip", GOOD, mode="500")
    with pytest.raises(dl.DownloadError, match="500"):
        dl.fetch("bad.zip", bad, tmp_path, sha256=sha256(GOOD), progress=False)
    assert leftovers(tmp_path) == []


def test_failures_are_classified_by_exception_type_not_message_text(server, tmp_path):
    # a network failure whose text happens to say "wrong checksum" (here, in its URL) is a
    # DownloadError; only when every mirror served wrong bytes is it a ChecksumError
    net = server.add("/wrong checksum/a.zip", GOOD, mode="500")
    with pytest.raises(dl.DownloadError) as err:
        dl.fetch("a.zip", net, tmp_path, sha256=sha256(GOOD), progress=False)
    assert not isinstance(err.value, dl.ChecksumError)
    bytes_wrong = server.add("/b.zip", GOOD)
    with pytest.raises(dl.DownloadError) as err:  # one wrong-bytes mirror, one down: network
        dl.fetch("b.zip", [bytes_wrong, net], tmp_path, sha256="0" * 64, progress=False)
    assert not isinstance(err.value, dl.ChecksumError)
    with pytest.raises(dl.ChecksumError):
        dl.fetch("b.zip", [bytes_wrong, bytes_wrong], tmp_path, sha256="0" * 64, progress=False)
    assert leftovers(tmp_path) == []


def test_mirror_fallback(server, tmp_path):
    bad = server.add("/bad.zip", GOOD, mode="500")
    good = server.add("/good.zip", GOOD)
    path = dl.fetch("good.zip", [bad, good], tmp_path, sha256=sha256(GOOD), progress=False)
    assert path.read_bytes() == GOOD


def test_redownload_on_mismatch(server, tmp_path):
    url = server.add("/good.zip", GOOD)
    (tmp_path / "good.zip").write_bytes(b"stale or damaged")
    path = dl.fetch("good.zip", url, tmp_path, sha256=sha256(GOOD), progress=False)
    assert path.read_bytes() == GOOD


def test_keyboard_interrupt_mid_download_leaves_no_partial_file(server, tmp_path, monkeypatch):
    import tqdm.auto

    class InterruptingBar:
        """Stands in for the progress bar; pooch calls update() after each chunk written."""

        def __init__(self, *a, **k):
            self.total, self.calls = 1, 0

        def __bool__(self):
            return True

        def update(self, n):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt

        def reset(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", InterruptingBar)
    data = GOOD * 50
    url = server.add("/big.zip", data)
    with pytest.raises(KeyboardInterrupt):
        dl.fetch("big.zip", url, tmp_path, sha256=sha256(data), progress=True)
    assert leftovers(tmp_path) == []


def test_timeout(server, tmp_path):
    url = server.add("/slow.zip", GOOD, mode="stall")
    t0 = time.perf_counter()
    with pytest.raises(dl.DownloadError, match="(?i)timed? ?out"):
        dl.fetch("slow.zip", url, tmp_path, sha256=sha256(GOOD), timeout=0.3, progress=False)
    assert time.perf_counter() - t0 < 1.4 and leftovers(tmp_path) == []


def test_offline_error_names_dataset_url_cache_path_and_alternative(tmp_path):
    with socket.socket() as s:  # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hotdog.zip"
    with pytest.raises(dl.DownloadError) as err:
        dl.fetch("hotdog.zip", url, tmp_path / "hotdog", sha1="a" * 40, dataset="hotdog",
                 alternative="load('fashion_mnist')", progress=False)
    msg = str(err.value)
    for part in ("hotdog", url, str(tmp_path / "hotdog" / "hotdog.zip"), "load('fashion_mnist')"):
        assert part in msg
    with pytest.raises(dl.DownloadError, match="download=False"):
        dl.fetch("hotdog.zip", url, tmp_path, sha1="a" * 40, download=False)


def test_unverified_download_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unverified"):
        dl.fetch("x.zip", "http://127.0.0.1:9/x.zip", tmp_path)


def test_trust_on_first_use_records_and_enforces(server, tmp_path):
    url = server.add("/tofu.zip", GOOD)
    path = dl.fetch("tofu.zip", url, tmp_path, trust_on_first_use=True, progress=False)
    assert (tmp_path / "tofu.zip.sha256").read_text().split()[0] == sha256(GOOD)
    path.write_bytes(b"tampered")
    server.add("/tofu.zip", b"a different file")  # the server changed its content too
    with pytest.raises(dl.ChecksumError):
        dl.fetch("tofu.zip", url, tmp_path, trust_on_first_use=True, progress=False)
    assert not path.exists()


# --------------------------------------------------------------------------- extraction

def test_extract_good_zip_and_tar(tmp_path):
    z = tmp_path / "a.zip"
    z.write_bytes(GOOD)
    out = dl.extract(z, tmp_path / "out")
    assert (out / "pack" / "test" / "a" / "2.txt").read_bytes() == b"two" * 1000
    t = tmp_path / "a.tgz"
    t.write_bytes(make_tar({"d/x.txt": b"x"}, links={"d/link": "x.txt"}))
    out = dl.extract(t, tmp_path / "tout")
    assert (out / "d" / "x.txt").read_bytes() == b"x"
    assert leftovers(tmp_path) == ["a.tgz", "a.zip", "out", "tout"]  # no temporary folders


@pytest.mark.parametrize("maker,name", [
    (lambda: make_zip({"ok.txt": b"1", "../evil.txt": b"x"}), "../evil.txt"),
    (lambda: make_zip({"/abs/evil.txt": b"x"}), "/abs/evil.txt"),
    (lambda: make_tar({"ok.txt": b"1", "a/../../evil.txt": b"x"}), "a/../../evil.txt"),
    (lambda: make_tar({"ok.txt": b"1"}, links={"up": "../../etc/passwd"}), "up"),
    (lambda: make_tar({"ok.txt": b"1"}, links={"abs": "/etc/passwd"}), "abs"),
])
def test_unsafe_members_are_refused(tmp_path, maker, name):
    arch = tmp_path / "work" / "evil.bin"
    arch.parent.mkdir()
    arch.write_bytes(maker())
    with pytest.raises(dl.UnsafeArchiveError, match="escape") as err:
        dl.extract(arch, tmp_path / "work" / "out")
    assert repr(name) in str(err.value)
    assert leftovers(tmp_path / "work") == ["evil.bin"] and not (tmp_path / "evil.txt").exists()


def test_truncated_archive_extracts_nothing(tmp_path):
    big = make_zip({f"d/{i}.bin": bytes(range(256)) * 400 for i in range(5)})
    for name, data in [("t.zip", big[: len(big) - 3000]), ("t.tgz", make_tar({"d/x": b"y" * 9999})[:40])]:
        arch = tmp_path / name
        arch.write_bytes(data)
        with pytest.raises(dl.ArchiveError, match="truncated or corrupt"):
            dl.extract(arch, tmp_path / "out")
    assert sorted(leftovers(tmp_path)) == ["t.tgz", "t.zip"]


def test_served_archive_with_dotdot_member(server, tmp_path):
    data = make_zip({"pack/a.txt": b"a", "pack/../../escaped.txt": b"x"})
    url = server.add("/dotdot.zip", data)
    path = dl.fetch("dotdot.zip", url, tmp_path / "cache", sha256=sha256(data), progress=False)
    with pytest.raises(dl.UnsafeArchiveError):
        dl.extract(path, tmp_path / "cache" / "dotdot")
    assert leftovers(tmp_path / "cache") == ["dotdot.zip"] and not (tmp_path / "escaped.txt").exists()


class DroppingListener:
    """A loopback port that behaves like a firewall dropping packets: a listener whose
    accept queue is full (listen(0), filled, never accepted), so a new connection attempt
    gets no answer and waits for the connect timeout."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(0)
        self.port = self.server.getsockname()[1]
        self.fillers = []
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(c)
        time.sleep(0.05)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        for c in self.fillers:
            c.close()
        self.server.close()


def test_dropped_packets_fail_within_the_connect_timeout_not_the_read_timeout(tmp_path):
    net = DroppingListener()
    try:
        t0 = time.perf_counter()
        with pytest.raises(dl.DownloadError, match="ConnectTimeout") as err:
            dl.fetch("x.zip", net.url("/x.zip"), tmp_path / "c", sha256=sha256(GOOD), dataset="toy",
                     timeout=60, connect_timeout=0.4, progress=False)
        assert time.perf_counter() - t0 < 5
    finally:
        net.close()
    assert net.url("/x.zip") in str(err.value) and str(tmp_path / "c" / "x.zip") in str(err.value)
    assert leftovers(tmp_path / "c") == []


def _closed_port_url(path: str) -> str:
    with socket.socket() as s:  # a port on which nothing listens: the origin is "offline"
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}{path}"


def test_http_mirror_serves_the_cache_layout_before_the_origin(server, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "cache"))
    server.add("/course/hotdog/downloads/hotdog.zip", GOOD)
    monkeypatch.setenv(dl.MIRROR_ENV, server.url("/course/"))
    folder = dl.data_home("hotdog") / "downloads"
    path = dl.fetch("hotdog.zip", _closed_port_url("/hotdog.zip"), folder, sha256=sha256(GOOD),
                    dataset="hotdog", progress=False)
    assert path.read_bytes() == GOOD and leftovers(folder) == ["hotdog.zip"]


def test_folder_mirror_is_copied_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "cache"))
    mirror = tmp_path / "nfs"
    (mirror / "hotdog" / "downloads").mkdir(parents=True)
    (mirror / "hotdog" / "downloads" / "hotdog.zip").write_bytes(GOOD)
    monkeypatch.setenv(dl.MIRROR_ENV, str(mirror))
    folder = dl.data_home("hotdog") / "downloads"
    origin = _closed_port_url("/hotdog.zip")
    path = dl.fetch("hotdog.zip", origin, folder, sha256=sha256(GOOD), progress=False)
    assert path.read_bytes() == GOOD and leftovers(folder) == ["hotdog.zip"]
    # a damaged copy in the mirror is never cached; the error names the mirror's file
    path.unlink()
    (mirror / "hotdog" / "downloads" / "hotdog.zip").write_bytes(GOOD[:-5])
    with pytest.raises(dl.DownloadError) as err:
        dl.fetch("hotdog.zip", origin, folder, sha256=sha256(GOOD), dataset="hotdog",
                 progress=False)
    assert str(mirror / "hotdog" / "downloads" / "hotdog.zip") in str(err.value)
    assert leftovers(folder) == []
    # a file the mirror lacks: the error says so, and the origin was still tried
    monkeypatch.setenv(dl.MIRROR_ENV, str(tmp_path / "empty"))
    with pytest.raises(dl.DownloadError, match="not in the mirror") as err:
        dl.fetch("hotdog.zip", origin, folder, sha256=sha256(GOOD), progress=False)
    assert origin in str(err.value)
