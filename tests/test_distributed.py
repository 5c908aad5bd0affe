"""fit under DistributedDataParallel: 2 CPU processes with gloo on 127.0.0.1.

The two ranks are started the way torchrun starts them (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT in the environment), and ``fit`` initialises the process group
itself. This file doubles as the worker script: ``python test_distributed.py OUT_DIR``.
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

WORLD = 2
GLOBAL_BATCH = 8


class Batches:
    """Re-iterable batches without ``__len__`` (like a streaming loader): with 5 batches and
    grad_accum=2 the last step follows one backward run under DDP's no_sync."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def problem():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 3
    x = torch.randn(64, 5, generator=g) + nn.functional.one_hot(y, 5).float() * 2.0
    train = Batches([(x[i:i + GLOBAL_BATCH], y[i:i + GLOBAL_BATCH])
                     for i in range(0, 40, GLOBAL_BATCH)])
    val = [(x[40:], y[40:])]
    return train, val


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))


def run_fit(net, out_dir):
    from course_utils.train import fit

    train, val = problem()
    return fit(net, train, val, epochs=3, lr=0.2, optimizer="sgd", device="cpu", seed=0, grad_accum=2,
               progress=False, checkpoint_dir=Path(out_dir) / "ckpt", restore_best=False)


def worker(out_dir: str) -> None:
    from course_utils import distributed as ddp

    # each rank starts from a different init: DDP must broadcast rank 0's weights
    net = model()
    if int(os.environ["RANK"]) == 1:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
    hist = run_fit(net, out_dir)
    assert ddp.world_size() == WORLD
    torch.save({"state": net.state_dict(), "history": hist.to_dict(), "rank": ddp.rank()},
               Path(out_dir) / f"rank{ddp.rank()}.pt")
    ddp.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "COURSE_DEVICE": "cpu",
               "OMP_NUM_THREADS": "1"}
        if sys.platform.startswith("linux"):
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        procs.append(subprocess.Popen([sys.executable, __file__, str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=120)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{out}"

    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), f"ranks differ in {k}"
    # metrics are reduced over ranks, so both report the same global figures
    assert r0["history"]["records"] == r1["history"]["records"] or all(
        a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
        for a, b in zip(r0["history"]["records"], r1["history"]["records"]))
    # only rank 0 wrote the checkpoint (one file, no leftovers)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["best.pt", "last.pt"]

    single = model()
    hist = run_fit(single, tmp_path / "single")
    for k, v in single.state_dict().items():
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-4, atol=1e-5)
    # and training did change the weights (the comparison is not trivially true)
    assert not torch.allclose(single[0].weight, model()[0].weight, atol=1e-3)
    for a, b in zip(r0["history"]["records"], hist.records):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
        assert a["val_acc"] == pytest.approx(b["val_acc"])


def test_shard_takes_every_world_size_th_sample(monkeypatch):
    from course_utils import distributed as ddp

    monkeypatch.setattr(ddp, "world_size", lambda: 3)
    monkeypatch.setattr(ddp, "rank", lambda: 1)
    x, y = torch.arange(10), torch.arange(10) * 10
    sx, sy = ddp.shard(x, y)
    assert sx.tolist() == [1, 4, 7] and sy.tolist() == [10, 40, 70]
    assert ddp.shard(x[:2], y[:2]) is None


def test_not_distributed_by_default(monkeypatch):
    from course_utils import distributed as ddp

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not ddp.is_distributed()
    assert not ddp.init_distributed()
    assert ddp.world_size() == 1 and ddp.rank() == 0 and ddp.is_main_process()
    net = nn.Linear(2, 2)
    assert ddp.wrap_model(net, torch.device("cpu")) is net
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        ddp.init_distributed()


if __name__ == "__main__":
    worker(sys.argv[1])
