"""course_utils.train: fit / evaluate / predict on tiny CPU problems."""
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_utils import train as tr
from course_utils.history import EPOCH_KEYS, History


def blobs(n=128, seed=0, flip=False):
    """Two Gaussian blobs in 4-d, linearly separable; ``flip`` swaps the labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 4, generator=g) * 0.5 + (y[:, None] * 2.0 - 1.0) * 1.5
    return x, (1 - y) if flip else y


def batches(x, y, bs):
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)]


def mlp(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))


def test_fit_learns_separable_problem_and_records_history():
    x, y = blobs(256)
    xv, yv = blobs(128, seed=1)
    model = mlp()
    hist = tr.fit(model, batches(x, y, 32), batches(xv, yv, 64), epochs=5, lr=1e-2, progress=False)
    assert isinstance(hist, History) and len(hist) == 5
    for rec in hist.records:
        assert set(EPOCH_KEYS) <= set(rec)
        assert all(isinstance(rec[k], float) and math.isfinite(rec[k])
                   for k in EPOCH_KEYS if k != "epoch")
    assert hist["epoch"] == [1, 2, 3, 4, 5]
    assert hist["lr"] == [1e-2] * 5
    assert hist.last["val_acc"] >= 0.97
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    assert hist.best_epoch == int(np.argmin(hist["val_loss"])) + 1
    res = tr.evaluate(model, batches(xv, yv, 50))
    # restore_best loaded the best epoch, so evaluate reproduces its validation figures
    best = hist.records[hist.best_epoch - 1]
    assert res["acc"] == pytest.approx(best["val_acc"])
    assert res["loss"] == pytest.approx(best["val_loss"], rel=1e-5)


def test_fit_without_val_has_nan_val_columns_and_keeps_last_weights():
    x, y = blobs(64)
    hist = tr.fit(mlp(), batches(x, y, 16), epochs=2, progress=True)
    assert all(math.isnan(v) for v in hist["val_loss"])
    assert hist.best_epoch is None


def test_evaluate_and_predict_match_manual_computation():
    x, y = blobs(70)
    model = mlp()
    model.train()
    logits = tr.predict(model, batches(x, y, 32))
    assert model.training, "predict must restore the training mode it found"
    assert isinstance(logits, np.ndarray) and logits.shape == (70, 2) and logits.dtype == np.float32
    with torch.no_grad():
        model.eval()
        ref = model(x)
    np.testing.assert_allclose(logits, ref.numpy(), rtol=1e-6, atol=1e-6)
    # bare tensors work too
    np.testing.assert_allclose(tr.predict(model, [x[:30], x[30:]]), logits, rtol=1e-6, atol=1e-6)
    res = tr.evaluate(model, batches(x, y, 32), metrics={"err": lambda o, t: (o.argmax(1) != t).float().mean()})
    assert res["acc"] == pytest.approx(float((ref.argmax(1) == y).float().mean()))
    assert res["loss"] == pytest.approx(float(nn.functional.cross_entropy(ref, y)), rel=1e-5)
    assert res["err"] == pytest.approx(1 - res["acc"])


def test_early_stopping_and_restore_best():
    # validation labels are flipped, so the validation loss rises once training starts
    x, y = blobs(128)
    xv, yv = blobs(64, seed=1, flip=True)
    model = mlp()
    hist = tr.fit(model, batches(x, y, 32), batches(xv, yv, 64), epochs=30, lr=1e-2,
                  early_stopping=2, progress=False)
    assert hist.stopped_early
    assert len(hist) == hist.best_epoch + 2
    assert hist.best_epoch == 1
    # the restored weights are exactly those after epoch 1
    ref = mlp()
    tr.fit(ref, batches(x, y, 32), epochs=1, lr=1e-2, progress=False)
    for a, b in zip(model.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)
    # restore_best=False keeps the last epoch's weights
    last = mlp()
    tr.fit(last, batches(x, y, 32), batches(xv, yv, 64), epochs=30, lr=1e-2,
           early_stopping=2, restore_best=False, progress=False)
    assert not torch.equal(last[0].weight, model[0].weight)


def test_early_stopping_needs_val():
    x, y = blobs(32)
    with pytest.raises(ValueError, match="early_stopping needs validation data"):
        tr.fit(mlp(), batches(x, y, 16), epochs=2, early_stopping=1, progress=False)


class NumpyShuffleLoader:
    """Shuffles with NumPy's *global* generator (no set_epoch): exact resume needs the
    checkpoint to restore NumPy's state."""

    def __init__(self, x, y, bs):
        self.x, self.y, self.bs = x, y, bs

    def __len__(self):
        return math.ceil(len(self.x) / self.bs)

    def __iter__(self):
        idx = torch.from_numpy(np.random.permutation(len(self.x)))
        for i in range(0, len(idx), self.bs):
            j = idx[i:i + self.bs]
            yield self.x[j], self.y[j]


class EpochLoader(NumpyShuffleLoader):
    """Like the course's FastLoader: reseeds its shuffle from seed + epoch in set_epoch."""

    def __init__(self, x, y, bs, seed):
        super().__init__(x, y, bs)
        self.seed, self.epochs_seen = seed, []

    def set_epoch(self, epoch):
        self.epochs_seen.append(epoch)
        self.rng = np.random.default_rng(self.seed + epoch)

    def __iter__(self):
        idx = torch.from_numpy(self.rng.permutation(len(self.x)))
        for i in range(0, len(idx), self.bs):
            j = idx[i:i + self.bs]
            yield self.x[j], self.y[j]


class FlatFastLoader:
    """The course's FastLoader (uint8 images, seeded per-epoch shuffle), flattened for an MLP."""

    def __init__(self, x, y, bs):
        from course_utils.data import FastLoader

        img = ((x.numpy() + 4.0) * 30).clip(0, 255).astype(np.uint8).reshape(-1, 2, 2)
        self.inner = FastLoader(img, y.numpy(), bs, shuffle=True, seed=7, mean=(0.5,), std=(0.25,))

    def set_epoch(self, epoch):
        self.inner.set_epoch(epoch)

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        for xb, yb in self.inner:
            yield xb.flatten(1), yb


def _loaders(kind, x, y):
    if kind == "fastloader":
        return FlatFastLoader(x, y, 16)
    if kind == "dataloader-generator":
        return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True,
                          generator=torch.Generator().manual_seed(99))
    if kind == "dataloader-global":
        return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    if kind == "numpy-global":
        return NumpyShuffleLoader(x, y, 16)
    return EpochLoader(x, y, 16, seed=5)


@pytest.mark.parametrize("kind", ["dataloader-generator", "dataloader-global", "numpy-global",
                                  "set_epoch", "fastloader"])
def test_exact_resume_is_bit_identical(tmp_path, kind):
    x, y = blobs(64)
    xv, yv = blobs(32, seed=1)
    val = batches(xv, yv, 32)
    kw = dict(lr=5e-2, optimizer="sgd", seed=3, progress=False,
              scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7))

    full = mlp(dropout=0.3)
    h_full = tr.fit(full, _loaders(kind, x, y), val, epochs=4, restore_best=False,
                    checkpoint_dir=tmp_path / "a", **kw)

    part = mlp(dropout=0.3)
    tr.fit(part, _loaders(kind, x, y), val, epochs=2, checkpoint_dir=tmp_path / "b", **kw)
    # the "killed" process is gone; a new one builds a differently initialised model
    resumed = mlp(seed=1, dropout=0.3)
    # scramble the global generators too: the checkpoint must restore them
    torch.manual_seed(12345)
    np.random.seed(54321)
    loader = _loaders(kind, x, y)
    h_res = tr.fit(resumed, loader, val, epochs=4, restore_best=False,
                   checkpoint_dir=tmp_path / "b", **kw)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert h_res["epoch"] == [1, 2, 3, 4]
    for key in ("train_loss", "val_loss", "lr"):
        assert h_res[key] == h_full[key]
    if kind == "set_epoch":
        assert loader.epochs_seen == [2, 3]
    if kind != "dataloader-global":
        return
    # a different seed without a checkpoint gives different weights (the test can fail)
    other = mlp(dropout=0.3)
    tr.fit(other, _loaders(kind, x, y), val, epochs=4, restore_best=False,
           **{**kw, "seed": 4})
    assert not torch.equal(other[0].weight, full[0].weight)


def test_checkpoint_contents_and_resume_false(tmp_path):
    x, y = blobs(32)
    xv, yv = blobs(16, seed=1)
    tr.fit(mlp(), batches(x, y, 16), batches(xv, yv, 16), epochs=2, checkpoint_dir=tmp_path,
           progress=False)
    state = torch.load(tmp_path / tr.LAST_CHECKPOINT, weights_only=True)
    assert state["epoch"] == 2
    assert {"model", "optimizer", "scheduler", "rng", "history", "epoch", "seed"} <= set(state)
    assert {"python", "numpy", "torch"} <= set(state["rng"])
    assert len(state["history"]["records"]) == 2
    assert (tmp_path / tr.BEST_CHECKPOINT).exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    # resume=False starts over from the given model (one epoch recorded, not three)
    h = tr.fit(mlp(), batches(x, y, 16), epochs=1, checkpoint_dir=tmp_path, resume=False,
               progress=False)
    assert len(h) == 1
    assert torch.load(tmp_path / tr.LAST_CHECKPOINT, weights_only=True)["epoch"] == 1


def test_resume_with_a_different_model_is_a_clear_error(tmp_path):
    x, y = blobs(32)
    tr.fit(mlp(), batches(x, y, 16), epochs=1, checkpoint_dir=tmp_path, progress=False)
    other = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(RuntimeError, match="(?s)does not match this model.*resume=False"):
        tr.fit(other, batches(x, y, 16), epochs=2, checkpoint_dir=tmp_path, progress=False)


def test_nan_loss_raises_with_epoch_batch_and_lr_advice():
    x, y = blobs(64)
    calls = {"n": 0}

    def loss_fn(out, t):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(out, t)
        return loss * float("nan") if calls["n"] == 4 + 3 else loss  # epoch 2, batch 3

    with pytest.raises(tr.NonFiniteLossError, match=r"nan at epoch 2, batch 3 \(last finite "
                       r"loss: \d.*lr=0\.01"):
        tr.fit(mlp(), batches(x, y, 16), epochs=3, lr=0.1, loss_fn=loss_fn, progress=False)


def test_a_nonfinite_validation_loss_raises_instead_of_dropping_batches():
    """Regression (issue 15): one NaN validation batch made the meter drop every pending
    batch, so val_loss/val_acc silently came from fewer batches."""
    x, y = blobs(64)
    xv, yv = blobs(64, seed=1)
    val = batches(xv, yv, 8)

    def loss_fn(out, t):
        loss = nn.functional.cross_entropy(out, t)
        return loss * float("nan") if not torch.is_grad_enabled() and t is val[5][1] else loss

    with pytest.raises(tr.NonFiniteLossError, match=r"validation loss became nan at epoch 1, batch 6"):
        tr.fit(mlp(), batches(x, y, 16), val, epochs=2, loss_fn=loss_fn, progress=False)
    with pytest.raises(tr.NonFiniteLossError, match=r"validation loss became nan at batch 6"):
        tr.evaluate(mlp(), val, loss_fn=loss_fn)


def test_exploding_lr_is_reported():
    x, y = blobs(64)
    x = x * 1e3
    with pytest.raises(tr.NonFiniteLossError, match="learning rate"):
        tr.fit(mlp(), batches(x, y, 8), epochs=20, lr=1e12, optimizer="sgd", progress=False)


def test_grad_accumulation_matches_bigger_batches():
    x, y = blobs(64)
    a, b = mlp(), mlp()
    tr.fit(a, batches(x, y, 8), epochs=2, lr=0.1, optimizer="sgd", grad_accum=2, progress=False)
    tr.fit(b, batches(x, y, 16), epochs=2, lr=0.1, optimizer="sgd", progress=False)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    c = mlp()
    tr.fit(c, batches(x, y, 8), epochs=2, lr=0.1, optimizer="sgd", progress=False)
    assert not torch.allclose(c[0].weight, b[0].weight, atol=1e-4)


def test_grad_accumulation_partial_last_group_is_a_mean():
    # 3 batches of 8 with grad_accum=2: the last step sees one batch, weighted as a full mean
    x, y = blobs(24)
    a, b = mlp(), mlp()
    tr.fit(a, batches(x, y, 8), epochs=1, lr=0.1, optimizer="sgd", grad_accum=2, progress=False)
    tr.fit(b, [(x[:16], y[:16]), (x[16:], y[16:])], epochs=1, lr=0.1, optimizer="sgd",
           progress=False)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_optimizer_forms_scheduler_and_metrics():
    x, y = blobs(64)
    data = batches(x, y, 16)
    m = mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    h = tr.fit(m, data, data, epochs=3, optimizer=opt,
               scheduler=torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5), progress=False,
               metrics={"err": lambda o, t: (o.argmax(1) != t).float().mean()})
    assert h["lr"] == [0.05, 0.025, 0.0125]
    assert h["val_err"][-1] == pytest.approx(1 - h["val_acc"][-1])
    assert "train_err" in h.last
    h2 = tr.fit(mlp(), data, epochs=2, lr=0.1, scheduler="cosine", progress=False,
                optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    assert h2["lr"][0] == 0.1 and h2["lr"][1] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="optimizer = 'adamx'"):
        tr.fit(mlp(), data, epochs=1, optimizer="adamx", progress=False)
    with pytest.raises(ValueError, match="epochs"):
        tr.fit(mlp(), data, epochs=0)


def test_frozen_parameters_untouched_and_no_trainable_is_an_error():
    x, y = blobs(64)
    m = mlp()
    for p in m[0].parameters():
        p.requires_grad_(False)
    before = m[0].weight.clone()
    tr.fit(m, batches(x, y, 16), epochs=2, lr=0.1, progress=False)
    assert torch.equal(before, m[0].weight)
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        tr.fit(m, batches(x, y, 16), epochs=1, progress=False)


def test_fit_calls_model_train_each_epoch_and_respects_override():
    """fit calls model.train() on the model; a model whose train() keeps a BN in eval mode
    (what course_utils.models.freeze does) keeps its running statistics."""

    class FrozenBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(4)
            self.fc = nn.Linear(4, 2)
            self.train_calls = 0

        def train(self, mode=True):
            super().train(mode)
            if mode:
                self.train_calls += 1
                self.bn.eval()
            return self

        def forward(self, x):
            return self.fc(self.bn(x))

    x, y = blobs(64)
    m = FrozenBN()
    stats = m.bn.running_mean.clone()
    tr.fit(m, batches(x, y, 16), batches(x, y, 32), epochs=3, progress=False)
    assert m.train_calls >= 3
    assert torch.equal(stats, m.bn.running_mean)


def test_bad_batches_are_clear_errors():
    with pytest.raises(TypeError, match=r"\(x, y\) pairs"):
        tr.fit(mlp(), [torch.zeros(4, 4)], epochs=1, progress=False)
    with pytest.raises(ValueError, match="no batches"):
        tr.fit(mlp(), [], epochs=1, progress=False)


def test_amp_is_a_noop_on_cpu():
    x, y = blobs(64)
    a, b = mlp(), mlp()
    tr.fit(a, batches(x, y, 16), epochs=1, amp=True, device="cpu", progress=False)
    tr.fit(b, batches(x, y, 16), epochs=1, amp=False, device="cpu", progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="amp"):
        tr.fit(mlp(), batches(x, y, 16), epochs=1, amp="int8", progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cuda_learns(amp):
    x, y = blobs(256)
    m = mlp()
    h = tr.fit(m, batches(x, y, 32), batches(x, y, 64), epochs=5, lr=1e-2, amp=amp,
               device="cuda", channels_last=True, progress=False)
    assert h.last["val_acc"] > 0.95
    assert next(m.parameters()).device.type == "cuda"


def test_plateau_and_per_step_schedulers():
    x, y = blobs(64)
    xv, yv = blobs(32, seed=1, flip=True)  # validation loss rises: the plateau rule fires
    h = tr.fit(mlp(), batches(x, y, 16), batches(xv, yv, 32), epochs=3, lr=0.1, optimizer="sgd",
               scheduler=lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5,
                                                                              patience=0),
               progress=False)
    assert h["lr"][0] == 0.1 and h["lr"][2] < h["lr"][1] <= 0.1
    h = tr.fit(mlp(), batches(x, y, 16), epochs=2, lr=0.1, optimizer="sgd", progress=False,
               scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.5),
               scheduler_interval="step")
    assert h["lr"] == [0.1, pytest.approx(0.1 * 0.5 ** 4)]  # 4 optimizer steps per epoch
