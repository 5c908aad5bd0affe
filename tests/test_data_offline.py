"""With the network cut, loading a ``full``-profile dataset fails at its first download,
within seconds, naming the dataset, the URL and the cache path. The "network" here is a
closed loopback port (connection refused) or a loopback listener that never answers
(packets dropped); the real internet is never contacted."""
from __future__ import annotations

import dataclasses
import socket
import time

import pytest

from course_utils import cli, data
from course_utils import download as dl
from course_utils.data import folders
from test_download import DroppingListener  # noqa: E402  (tests/ is on sys.path)


def closed_port() -> int:
    with socket.socket() as s:  # bound, never listening, then closed: connection refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cut_network(monkeypatch, base_url: str) -> None:
    """Point every file of every full dataset at ``base_url`` + its file name."""
    for name in data.list_datasets("full"):
        spec = folders.FOLDER_DATASETS[name]
        files = tuple(dataclasses.replace(f, urls=(f"{base_url}/{name}/{f.fname}",))
                      for f in spec.files)
        monkeypatch.setitem(folders.FOLDER_DATASETS, name, dataclasses.replace(spec, files=files))


def assert_offline_message(msg: str, name: str, cache) -> None:
    first = folders.FOLDER_DATASETS[name].files[0]
    assert f"dataset {name!r}" in msg
    assert first.urls[0] in msg  # the first download is the one that failed...
    assert str(cache / name / "downloads" / first.fname) in msg  # ...and where to put a copy
    for later in folders.FOLDER_DATASETS[name].files[1:]:
        assert later.fname not in msg  # nothing after it was tried


@pytest.mark.parametrize("name", ["hotdog", "hymenoptera", "cats_vs_dogs", "flowers102"])
def test_connection_refused_fails_fast_at_the_first_download(name, tmp_path, monkeypatch):
    assert name in data.list_datasets("full")
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    cut_network(monkeypatch, f"http://127.0.0.1:{closed_port()}")
    t0 = time.perf_counter()
    with pytest.raises(dl.DownloadError) as err:
        data.load(name, progress=False)
    assert time.perf_counter() - t0 < 5
    assert_offline_message(str(err.value), name, tmp_path)
    assert not any(p.is_file() for p in (tmp_path / name).rglob("*"))  # nothing half-written


def test_every_full_dataset_is_covered():
    assert set(data.list_datasets("full")) == {"hotdog", "hymenoptera", "cats_vs_dogs", "flowers102"}


def test_dropped_packets_fail_within_the_connect_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    monkeypatch.setattr(dl, "CONNECT_TIMEOUT", 0.5)  # the default is 10 s; the read timeout stays 60 s
    net = DroppingListener()
    try:
        cut_network(monkeypatch, net.url(""))
        t0 = time.perf_counter()
        with pytest.raises(dl.DownloadError, match="ConnectTimeout") as err:
            data.load("flowers102", progress=False)
        assert time.perf_counter() - t0 < 5
    finally:
        net.close()
    assert_offline_message(str(err.value), "flowers102", tmp_path)


def test_course_data_offline_names_dataset_url_and_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    cut_network(monkeypatch, f"http://127.0.0.1:{closed_port()}")
    assert cli.main(["data", "hymenoptera"]) == 1
    err = capsys.readouterr().err
    assert_offline_message(err, "hymenoptera", tmp_path)
    assert "fashion_mnist" in err  # the offline alternative
