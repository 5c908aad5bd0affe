"""course bench train: the pieces run at tiny sizes; the table and --strict exit status."""
import copy

import pytest
import torch
from torch import nn

from course_utils.bench import train as bt


def test_fit_does_the_same_work_as_the_plain_loop():
    """The throughput comparison is fair: same seed, same batches -> identical weights."""
    from course_utils.device import seed_everything
    from course_utils.train import fit

    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g))
            for _ in range(4)]
    torch.manual_seed(1)
    base = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    seed_everything(5)
    bt._plain_loop(a, data, torch.optim.Adam(a.parameters(), lr=1e-3), 2, torch.device("cpu"))
    fit(b, data, epochs=2, lr=1e-3, optimizer="adam", seed=5, progress=False)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(a[0].weight, base[0].weight)


def test_flops_runs_at_tiny_size():
    r = bt.bench_flops(torch.device("cpu"), batch=1, size=64, matmul_n=64, reps=1)
    assert r["unit"] == "GFLOP/s" and r["a"] > 0 and r["b"] > 0 and r["ratio"] > 0
    assert "GFLOP/image" in r["what"]


@pytest.mark.slow
def test_cached_vs_frozen_runs_on_lite0():
    r = bt.bench_cached_vs_frozen(torch.device("cpu"), n=8, size=64, batch=8, frozen_epochs=1,
                                  head_epochs=2, seed=0)
    assert r["ratio"] > 1  # a linear layer on 8 rows vs a CNN forward on 8 images
    assert "extraction" in r["what"]


def test_frozen_backbone_wrapper_keeps_bn_statistics_and_trains_head():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
            self.num_features = 4

        def forward_features(self, x):
            return self.bn(self.conv(x))

    net = bt._FrozenBackbone(Tiny(), nn.Linear(4, 2))
    stats = net.backbone.bn.running_mean.clone()
    head = net.head.weight.clone()
    from course_utils.train import fit

    x = torch.randn(16, 3, 8, 8)
    y = torch.arange(16) % 2
    fit(net, [(x, y)], epochs=2, lr=0.1, progress=False)
    assert torch.equal(stats, net.backbone.bn.running_mean)
    assert not torch.equal(head, net.head.weight)
    assert not net.backbone.training and net.training


def test_tensor_batches_shuffle_depends_on_epoch_only():
    x = torch.arange(10).float()[:, None]
    b = bt._TensorBatches(x, torch.arange(10), 4, seed=1)
    b.set_epoch(3)
    first = [yb.tolist() for _, yb in b]
    b.set_epoch(3)
    assert [yb.tolist() for _, yb in b] == first
    b.set_epoch(4)
    assert [yb.tolist() for _, yb in b] != first
    assert sorted(sum(first, [])) == list(range(10)) and len(b) == 3


def test_main_prints_table_and_strict_exit_status(monkeypatch, capsys):
    canned = {"a": 1.0, "b": 1.0, "unit": "img/s", "what": "canned"}
    monkeypatch.setattr(bt, "bench_fit_vs_plain", lambda *a, **k: {**canned, "ratio": 0.5})
    monkeypatch.setattr(bt, "bench_cached_vs_frozen", lambda *a, **k: {**canned, "ratio": 40.0})
    monkeypatch.setattr(bt, "bench_flops", lambda *a, **k: {**canned, "ratio": 0.1})
    assert bt.main(["--quick", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split("  ")[0]: ln for ln in out.splitlines()}
    assert "MISSED" in lines["fit / plain loop"]
    assert lines["cached / frozen backbone"].rstrip().endswith("ok")
    assert lines["Lite0 / matmul FLOP/s"].rstrip().endswith("report")
    assert bt.main(["--quick", "--device", "cpu", "--strict"]) == 1
    assert bt.main(["--device", "cpu", "--strict", "--only", "b"]) == 0
