"""The course's PyTorch training loop: ``fit``, ``evaluate`` and ``predict``.

Every training step in the notebooks goes through :func:`fit`, so the things that are easy
to get wrong in a hand-written loop are done once, here, and tested:

* the loss is the *mean* over the batch (the PyTorch tutorials' convention; d2l sums, which
  needs learning rates ``batch_size`` times smaller);
* ``model.train()`` at the start of every epoch and ``model.eval()`` under ``no_grad`` for
  validation. ``fit`` calls ``model.train()`` on the model itself and never walks its
  modules, so a model whose ``train()`` keeps frozen BatchNorm layers in eval mode
  (``course_utils.models.freeze``) keeps them there;
* a checkpoint after every epoch, written atomically, holding everything needed for an
  *exact* resume (see :mod:`course_utils.checkpoint` and "Data order" below);
* a clear error when the loss becomes NaN or infinite, instead of 20 epochs of ``nan``;
* early stopping on the validation loss and restoring the best epoch's weights;
* mixed precision (``amp=True``: bfloat16 on recent GPUs, float16 with a ``GradScaler``
  otherwise, nothing on the CPU), gradient accumulation, channels_last, gradient clipping;
* data-parallel training under ``torchrun`` (see :mod:`course_utils.distributed`).

Data order. Exact resume needs the shuffle of epoch ``e`` to be reproducible on its own.
Before each epoch ``fit`` calls ``train.set_epoch(e)`` when the loader has that method (the
course's ``FastLoader`` reseeds its shuffle from ``seed + e``; a ``DistributedSampler``
works the same way through ``train.sampler.set_epoch``). A ``torch.utils.data.DataLoader``
built with ``generator=`` (or whose sampler has one) gets that generator reseeded with
``seed + e``. A ``DataLoader`` without a generator draws its shuffle from torch's global
generator, whose state the checkpoint restores, so it resumes exactly as well.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from course_utils.progress import tqdm

from course_utils import distributed as ddp
from course_utils.checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from course_utils.device import amp_dtype, autocast, get_device, seed_everything, to_channels_last
from course_utils.errors import NonFiniteLossError
from course_utils.history import History

__all__ = ["fit", "evaluate", "predict", "NonFiniteLossError", "OPTIMIZERS", "LAST_CHECKPOINT",
           "BEST_CHECKPOINT"]

log = logging.getLogger(__name__)

#: file names inside ``checkpoint_dir``
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
_FORMAT = 1
#: losses are checked for NaN (one host-device sync) once every this many batches; the
#: error still names the exact batch where the loss first went bad
_SYNC_EVERY = 16


def _adam(params, lr, wd):
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


def _adamw(params, lr, wd):
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def _sgd(params, lr, wd):
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)


def _rmsprop(params, lr, wd):
    return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)


#: optimizer names ``fit`` accepts; ``sgd`` uses momentum 0.9 as in the course's recipes
OPTIMIZERS: dict[str, Callable] = {"adam": _adam, "adamw": _adamw, "sgd": _sgd, "rmsprop": _rmsprop}


def _make_optimizer(optimizer, model: nn.Module, lr: float, weight_decay: float):
    params = [p for p in model.parameters() if p.requires_grad]
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if not params:
        raise ValueError("the model has no trainable parameters (every requires_grad is False); "
                         "unfreeze at least the head, e.g. course_utils.models.unfreeze(model, "
                         "from_group='classifier')")
    if isinstance(optimizer, str):
        key = optimizer.lower()
        if key not in OPTIMIZERS:
            raise ValueError(f"optimizer = {optimizer!r} is not known; use one of "
                             f"{', '.join(map(repr, OPTIMIZERS))}, a torch.optim.Optimizer, or a "
                             "callable params -> optimizer")
        return OPTIMIZERS[key](params, lr, weight_decay)
    if callable(optimizer):
        opt = optimizer(params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"optimizer callable returned {type(opt).__name__}, "
                            "not a torch.optim.Optimizer")
        return opt
    raise TypeError(f"optimizer must be a name, a torch.optim.Optimizer or a callable, "
                    f"got {type(optimizer).__name__}")


def _make_scheduler(scheduler, optimizer, epochs: int):
    if scheduler is None:
        return None
    if isinstance(scheduler, str):
        if scheduler.lower() != "cosine":
            raise ValueError(f"scheduler = {scheduler!r} is not known; use 'cosine', a scheduler "
                             "instance, or a callable optimizer -> scheduler")
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if hasattr(scheduler, "step") and hasattr(scheduler, "state_dict"):
        return scheduler
    if callable(scheduler):
        return scheduler(optimizer)
    raise TypeError(f"scheduler must be None, 'cosine', a scheduler or a callable, "
                    f"got {type(scheduler).__name__}")


def _split_batch(batch, where: str):
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(f"{where} must yield (x, y) pairs; got a {type(batch).__name__}. Wrap "
                    "tensors with torch.utils.data.TensorDataset + DataLoader or use "
                    "course_utils.data.FastLoader")


def _to_device(t, dev: torch.device, channels_last: bool = False):
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if isinstance(t, torch.Tensor):
        t = t.to(dev, non_blocking=True)
        if channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
    return t


def _correct(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """Number of correct predictions in a batch (a tensor, no sync), or None when accuracy
    does not apply (e.g. regression)."""
    if not isinstance(out, torch.Tensor) or not isinstance(y, torch.Tensor):
        return None
    if out.dim() == 2 and out.shape[1] > 1 and y.dim() == 1 and not y.is_floating_point():
        return (out.argmax(1) == y).sum()
    if out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1):
        return ((out.reshape(-1) > 0) == (y.reshape(-1) > 0.5)).sum()
    return None


class _Meter:
    """Running sums of loss, correct and metrics, kept on the device and read back every
    ``_SYNC_EVERY`` batches (a host-device sync per batch would slow down small models)."""

    def __init__(self, metrics: Mapping[str, Callable]):
        self.metrics = dict(metrics or {})
        self.pending: list[tuple[int, torch.Tensor, int, torch.Tensor | None, list]] = []
        self.loss_sum = 0.0
        self.correct = 0.0
        self.n = 0
        self.n_acc = 0
        self.metric_sums = {k: 0.0 for k in self.metrics}
        self.last_finite: float | None = None

    def add(self, index: int, loss: torch.Tensor, out, y) -> None:
        n = len(y)
        with torch.no_grad():
            c = _correct(out, y)
            m = [torch.as_tensor(fn(out, y)).detach().float() * n for fn in self.metrics.values()]
        self.pending.append((index, loss.detach().float(), n, c, m))

    def flush(self) -> tuple[int, float] | None:
        """Fold pending batches into the sums; return (batch index, loss) of the first
        non-finite loss, if any."""
        if not self.pending:
            return None
        losses = torch.stack([p[1] for p in self.pending]).cpu()
        finite = torch.isfinite(losses)
        bad = None
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0])
            bad = (self.pending[i][0], float(losses[i]))
            if i > 0:
                self.last_finite = float(losses[i - 1])
        else:
            self.last_finite = float(losses[-1])
            counts = [p[2] for p in self.pending]
            self.loss_sum += float((losses.double() * torch.tensor(counts, dtype=torch.float64)).sum())
            self.n += sum(counts)
            with_acc = [p for p in self.pending if p[3] is not None]
            if with_acc:
                self.correct += float(torch.stack([p[3] for p in with_acc]).sum())
                self.n_acc += sum(p[2] for p in with_acc)
            for j, k in enumerate(self.metrics):
                self.metric_sums[k] += float(torch.stack([p[4][j] for p in self.pending]).sum())
        self.pending.clear()
        return bad

    def result(self, device, reduce: bool) -> dict:
        vals = [self.loss_sum, self.n, self.correct, self.n_acc, *self.metric_sums.values()]
        if reduce:
            vals = ddp.all_reduce_sum(vals, device)
        loss_sum, n, correct, n_acc, *ms = vals
        out = {"loss": loss_sum / n if n else float("nan"),
               "acc": correct / n_acc if n_acc else float("nan")}
        out.update({k: (v / n if n else float("nan")) for k, v in zip(self.metrics, ms)})
        return out


def _raise_nonfinite(bad, meter: _Meter, epoch: int, optimizer) -> None:
    index, value = bad
    lr = optimizer.param_groups[0]["lr"]
    last = f"{meter.last_finite:.4g}" if meter.last_finite is not None else "none yet"
    raise NonFiniteLossError(
        f"the training loss became {value} at epoch {epoch}, batch {index} (last finite loss: "
        f"{last}). The learning rate ({lr:g}) is probably too high: try lr={lr / 10:g}; also "
        "check the inputs for NaN, or pass clip_grad_norm=1.0")


def _raise_nonfinite_eval(bad, epoch: int | None) -> None:
    """A non-finite loss on held-out data: the mean over the other batches would be a
    silently different number (early stopping and the best checkpoint trust it), so stop."""
    index, value = bad
    where = f"at epoch {epoch}, batch {index}" if epoch is not None else f"at batch {index}"
    raise NonFiniteLossError(
        f"the validation loss became {value} {where} of the evaluation data. Check those "
        "inputs and labels for NaN or out-of-range values, and the model's outputs (a "
        "diverged model gives inf logits); with amp=True, try amp=False")


def _check_bad_everywhere(bad, device) -> tuple[int, float] | None:
    """Under DDP all ranks must stop together: share the first bad batch index."""
    if ddp.world_size() == 1:
        return bad
    idx = float(bad[0]) if bad else float("inf")
    # each rank fills its own slot (others 0), so the sum gathers every rank's first bad index
    vals = ddp.all_reduce_sum([idx if r == ddp.rank() else 0.0 for r in range(ddp.world_size())],
                              device)
    first = min(vals)
    if math.isinf(first):
        return None
    return bad if bad and bad[0] == first else (int(first), float("nan"))


def _set_epoch(loader, epoch: int, seed: int | None) -> None:
    """Make the data order of ``epoch`` a function of (seed, epoch) where the loader allows."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    sampler = getattr(loader, "sampler", None)
    if sampler is not None and hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if seed is None:
        return
    for owner in (loader, sampler, getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        gen = getattr(owner, "generator", None)
        if isinstance(gen, torch.Generator):
            gen.manual_seed(seed + epoch)


@dataclass
class _Update:
    """What one optimizer update needs, fixed for a whole fit: the optimizer and its
    parameters, the loss, mixed precision (``amp_dt``, and a ``scaler`` for float16),
    gradient accumulation and clipping, and the scheduler stepped per update (or None)."""

    optimizer: torch.optim.Optimizer
    loss_fn: Callable
    dev: torch.device
    amp_dt: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    grad_accum: int
    clip_grad_norm: float | None
    scheduler_per_step: object | None
    params: list = field(default_factory=list)

    def __post_init__(self):
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]

    def backward(self, net, x, y, *, group: int, sync: bool):
        """Forward and backward of one batch under autocast, the loss divided by the
        accumulation ``group`` size so the summed gradient is the group's mean. Under DDP,
        gradients are all-reduced only on the batch that ends a group (``sync``)."""
        ctx = net.no_sync() if ddp.world_size() > 1 and not sync else nullcontext()
        with ctx:
            with autocast(self.dev, self.amp_dt is not None, self.amp_dt):
                out = net(x)
                loss = self.loss_fn(out, y)
            scaled = loss / group if group > 1 else loss
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return out, loss

    def step(self) -> None:
        """One optimizer step on the accumulated gradients (unscaled and clipped first where
        asked), then the per-step scheduler."""
        _step(self.optimizer, self.scaler, self.params, self.clip_grad_norm)
        if self.scheduler_per_step is not None:
            self.scheduler_per_step.step()


def _accumulation_group(index: int, n_batches: int | None, grad_accum: int) -> tuple[int, bool]:
    """(size of the accumulation group batch ``index`` (1-based) is in, whether it ends it).
    The last group of an epoch may be short: it is averaged over the batches it has."""
    pos = (index - 1) % grad_accum
    if n_batches is None:
        return grad_accum, pos + 1 == grad_accum
    group = min(grad_accum, n_batches - (index - 1 - pos))
    return group, pos + 1 == group


def _run_epoch(net, loader, update: _Update, *, metrics, channels_last, epoch, epochs,
               show) -> dict:
    """One pass over ``loader``: forward, backward, an optimizer step every ``grad_accum``
    batches; losses are checked for NaN every ``_SYNC_EVERY`` batches and at the end."""
    meter = _Meter(metrics)
    try:
        n_batches = len(loader)
    except TypeError:
        n_batches = None
    bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not show,
               unit="batch", dynamic_ncols=True)
    update.optimizer.zero_grad(set_to_none=True)
    pending_grads = False
    index = -1
    try:
        for index, batch in enumerate(loader, start=1):
            x, y = _split_batch(batch, "train")
            part = ddp.shard(x, y)
            if part is None:
                log.debug("skipping batch %d: fewer samples than processes", index)
                continue
            x = _to_device(part[0], update.dev, channels_last)
            y = _to_device(part[1], update.dev)
            group, step_now = _accumulation_group(index, n_batches, update.grad_accum)
            out, loss = update.backward(net, x, y, group=group, sync=step_now)
            pending_grads = not step_now
            if step_now:
                update.step()
            meter.add(index, loss, out, y)
            if len(meter.pending) >= _SYNC_EVERY:
                _check_train_flush(meter, update, epoch)
                if show and meter.n:
                    bar.set_postfix(loss=f"{meter.loss_sum / meter.n:.4f}", refresh=False)
            bar.update(1)
        if pending_grads:  # the loader ended inside an accumulation group
            if ddp.world_size() > 1:  # those backward passes ran under no_sync: average by hand
                ddp.average_gradients(update.params)
            update.step()
        _check_train_flush(meter, update, epoch)
    finally:
        bar.close()
    if index < 0:
        raise ValueError("the train loader yielded no batches; check its length and drop_last")
    return meter.result(update.dev, reduce=ddp.world_size() > 1)


def _check_train_flush(meter: _Meter, update: _Update, epoch: int) -> None:
    bad = _check_bad_everywhere(meter.flush(), update.dev)
    if bad:
        _raise_nonfinite(bad, meter, epoch, update.optimizer)


def _step(optimizer, scaler, params, clip_grad_norm) -> None:
    if scaler is not None:
        if clip_grad_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        if clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def _evaluate(model, data, *, dev, loss_fn, metrics, amp_dt, channels_last, shard,
              epoch: int | None = None) -> dict:
    was_training = model.training
    model.eval()
    meter = _Meter(metrics)
    try:
        for index, batch in enumerate(data, start=1):
            x, y = _split_batch(batch, "the evaluation data")
            if shard:
                part = ddp.shard(x, y)
                if part is None:
                    continue
                x, y = part
            x = _to_device(x, dev, channels_last)
            y = _to_device(y, dev)
            with autocast(dev, amp_dt is not None, amp_dt):
                out = model(x)
                loss = loss_fn(out, y)
            meter.add(index, loss, out, y)
            if len(meter.pending) >= _SYNC_EVERY:
                _check_eval_flush(meter, dev, shard, epoch)
        _check_eval_flush(meter, dev, shard, epoch)
    finally:
        model.train(was_training)
    return meter.result(dev, reduce=shard and ddp.world_size() > 1)


def _check_eval_flush(meter: _Meter, dev, shard: bool, epoch: int | None) -> None:
    bad = meter.flush()
    if shard:
        bad = _check_bad_everywhere(bad, dev)
    if bad:
        _raise_nonfinite_eval(bad, epoch)


def evaluate(model: nn.Module, data: Iterable, *, device=None, loss_fn=None,
             metrics: Mapping[str, Callable] | None = None, amp: bool = False,
             channels_last: bool = False) -> dict:
    """Mean loss and accuracy of ``model`` over ``data`` (an iterable of ``(x, y)``
    batches), in eval mode without gradients: ``{"loss": ..., "acc": ..., **metrics}``.
    Averages are over samples, not batches, so a short last batch counts for what it is.
    ``metrics`` maps a name to ``fn(outputs, targets) -> batch mean``. A NaN or infinite
    loss on any batch raises :class:`NonFiniteLossError` (a mean over the other batches
    would be a different, silently wrong number)."""
    dev = get_device(device)
    model.to(dev)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    return _evaluate(model, data, dev=dev, loss_fn=loss_fn, metrics=metrics,
                     amp_dt=amp_dtype(dev, amp), channels_last=channels_last, shard=False)


@torch.no_grad()
def predict(model: nn.Module, data: Iterable, *, device=None, amp: bool = False) -> np.ndarray:
    """The model's outputs (logits) for every sample of ``data``, as one float32 NumPy array
    in data order. ``data`` yields ``(x, y)`` batches (``y`` is ignored) or bare ``x``
    tensors."""
    dev = get_device(device)
    model.to(dev)
    was_training = model.training
    model.eval()
    amp_dt = amp_dtype(dev, amp)
    outs = []
    try:
        for batch in data:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            with autocast(dev, amp_dt is not None, amp_dt):
                out = model(_to_device(x, dev))
            outs.append(out.float().cpu())
    finally:
        model.train(was_training)
    if not outs:
        raise ValueError("predict got no batches: the data iterable is empty")
    return torch.cat(outs).numpy()


def _resolve_amp(amp, dev) -> torch.dtype | None:
    if amp in (False, None):
        return None
    names = {True: None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if isinstance(amp, torch.dtype):
        return amp_dtype(dev, True, amp)
    if amp not in names:
        raise ValueError(f"amp = {amp!r}; use False, True, 'bf16' or 'fp16'")
    dt = amp_dtype(dev, True, names[amp])
    if dt is None:
        log.info("amp=%r ignored on %s: mixed precision is used on CUDA only", amp, dev)
    return dt


def fit(model: nn.Module, train: Iterable, val: Iterable | None = None, *, epochs: int,
        lr: float = 1e-3, optimizer="adam", scheduler=None, loss_fn=None,
        metrics: Mapping[str, Callable] | None = None, device=None, seed: int | None = 0,
        checkpoint_dir: str | Path | None = None, resume: bool = True,
        early_stopping: int | None = None, restore_best: bool = True, amp=False,
        grad_accum: int = 1, channels_last: bool = False, progress: bool = True,
        weight_decay: float = 0.0, clip_grad_norm: float | None = None,
        scheduler_interval: str = "epoch") -> History:
    """Train ``model`` on ``train`` for ``epochs`` epochs and return a :class:`History`.

    Parameters
    ----------
    train, val
        Any iterables of ``(x, y)`` batches (a ``FastLoader`` or a ``DataLoader``). ``val``
        is evaluated after every epoch; it drives early stopping and the best checkpoint.
    optimizer
        ``"adam"`` (default), ``"adamw"``, ``"sgd"`` (momentum 0.9) or ``"rmsprop"`` built on
        the trainable parameters with ``lr`` and ``weight_decay``; or an optimizer instance
        (``lr`` is then ignored), e.g. one built on ``course_utils.models.param_groups``; or
        a callable ``params -> optimizer``.
    scheduler
        ``None``, ``"cosine"`` (cosine annealing over ``epochs``), a scheduler instance, or a
        callable ``optimizer -> scheduler``. Stepped once per epoch, or per optimizer step
        with ``scheduler_interval="step"``. ``ReduceLROnPlateau`` is stepped with the
        validation loss (the training loss without ``val``).
    loss_fn
        ``loss_fn(outputs, targets)`` returning the *mean* loss over the batch; default
        ``nn.CrossEntropyLoss()``.
    metrics
        Extra ``name -> fn(outputs, targets)`` batch means, recorded as ``train_<name>`` and
        ``val_<name>``. Accuracy is always recorded (NaN where it does not apply).
    seed
        Seeds Python, NumPy and torch at the start (not on resume: the checkpoint's generator
        states are restored instead) and the loaders' per-epoch shuffles. ``None``: no seeding.
    checkpoint_dir, resume
        Save ``last.pt`` after every epoch (and ``best.pt`` when the validation loss
        improves). With ``resume=True`` an existing ``last.pt`` is loaded and training
        continues after its epoch, ending with the same weights an uninterrupted run would.
        ``resume=False`` starts over and overwrites it.
    early_stopping
        Patience in epochs: stop when the validation loss has not improved for that many
        epochs (needs ``val``).
    restore_best
        At the end, load the weights of the epoch with the lowest validation loss (with
        ``val`` only) and set ``history.best_epoch``.
    amp
        ``True`` for mixed precision on CUDA (bfloat16 where supported, else float16 with a
        GradScaler), ``"bf16"``/``"fp16"`` to choose; ignored on the CPU.
    grad_accum
        Accumulate gradients over this many batches per optimizer step: ``batch_size=b,
        grad_accum=k`` follows ``batch_size=k*b`` for models without BatchNorm.
    channels_last, clip_grad_norm, progress
        NHWC memory format; clip the gradient norm before each step; show tqdm bars.

    Under ``torchrun`` (or an initialised ``torch.distributed``) the model is wrapped in
    ``DistributedDataParallel`` and each global batch is split between the processes (see
    :mod:`course_utils.distributed`); only rank 0 writes checkpoints and shows progress.
    Raises :class:`NonFiniteLossError` when the training or the validation loss becomes NaN
    or infinite.
    """
    _check_fit_arguments(epochs, grad_accum, early_stopping, val, scheduler_interval)
    dev, distributed = _place(device)
    main = ddp.is_main_process()
    show = bool(progress) and main
    model.to(dev)
    if channels_last:
        to_channels_last(model)
    opt = _make_optimizer(optimizer, model, lr, weight_decay)
    sched = _make_scheduler(scheduler, opt, epochs)
    plateau = isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if plateau and scheduler_interval == "step":
        raise ValueError("ReduceLROnPlateau needs a loss, so it can only be stepped per epoch")
    amp_dt = _resolve_amp(amp, dev)
    update = _Update(opt, loss_fn or nn.CrossEntropyLoss(), dev, amp_dt,
                     torch.amp.GradScaler("cuda") if amp_dt == torch.float16 else None,
                     grad_accum, clip_grad_norm, sched if scheduler_interval == "step" else None)
    ckpt = _Checkpoints(Path(checkpoint_dir) if checkpoint_dir is not None else None, main)
    history, start, stop, best_state = _start_or_resume(ckpt, resume, seed, model, opt, sched,
                                                        update.scaler)

    net = ddp.wrap_model(model, dev)
    epoch_bar = tqdm(total=epochs, initial=min(start, epochs), desc="fit", unit="epoch",
                     disable=not show, dynamic_ncols=True)
    try:
        for e in range(start, epochs):  # the loop the course teaches, one epoch per pass
            if history.stopped_early:
                break
            t0 = time.perf_counter()
            _set_epoch(train, e, seed)
            lr_now = opt.param_groups[0]["lr"]
            net.train()
            tr = _run_epoch(net, train, update, metrics=metrics, channels_last=channels_last,
                            epoch=e + 1, epochs=epochs, show=show)
            va = None
            if val is not None:
                va = _evaluate(model, val, dev=dev, loss_fn=update.loss_fn, metrics=metrics,
                               amp_dt=amp_dt, channels_last=channels_last, shard=distributed,
                               epoch=e + 1)
            if sched is not None and scheduler_interval == "epoch":
                if plateau:  # ReduceLROnPlateau steps on a loss
                    sched.step(va["loss"] if va else tr["loss"])
                else:
                    sched.step()
            if va is not None and stop.update(va["loss"], e + 1):
                best_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
                ckpt.save_best(e + 1, best_state)
            elif va is not None and stop.exhausted(early_stopping):
                history.stopped_early = True
                log.info("early stopping after epoch %d: no val_loss improvement for %d epochs "
                         "(best %.4g at epoch %d)", e + 1, stop.bad_epochs, stop.best_loss,
                         stop.best_epoch)
            rec = history.append(**_epoch_row(e + 1, tr, va, lr_now, metrics),
                                 seconds=time.perf_counter() - t0)
            log.info("epoch %d/%d: %s", e + 1, epochs, ", ".join(
                f"{k}={v:.4g}" for k, v in rec.items() if k != "epoch" and isinstance(v, float)))
            ckpt.save_last(e + 1, seed, model, opt, sched, update.scaler, history, stop)
            ddp.barrier()
            epoch_bar.set_postfix({k: f"{rec[k]:.4f}" for k in ("train_loss", "val_loss", "val_acc")
                                   if not math.isnan(rec[k])}, refresh=False)
            epoch_bar.update(1)
    finally:
        epoch_bar.close()

    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
        history.best_epoch = stop.best_epoch
        log.info("restored the weights of epoch %d (val_loss %.4g)", stop.best_epoch, stop.best_loss)
    return history


# --- the parts of fit ------------------------------------------------------------------------

def _check_fit_arguments(epochs, grad_accum, early_stopping, val, scheduler_interval) -> None:
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs = {epochs!r}; it must be a positive int")
    if not isinstance(grad_accum, int) or grad_accum < 1:
        raise ValueError(f"grad_accum = {grad_accum!r}; it must be an int >= 1")
    if early_stopping is not None and (not isinstance(early_stopping, int) or early_stopping < 1):
        raise ValueError(f"early_stopping = {early_stopping!r}; give a patience in epochs (int >= 1)")
    if early_stopping is not None and val is None:
        raise ValueError("early_stopping needs validation data: pass val=... (a held-out split, "
                         "e.g. from ImageData.train_val_split)")
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval = {scheduler_interval!r}; use 'epoch' or 'step'")


def _place(device) -> tuple[torch.device, bool]:
    """The device to train on and whether this is a distributed run (under torchrun each
    process takes its own GPU)."""
    dev = get_device(device)
    distributed = ddp.init_distributed("nccl" if dev.type == "cuda" else "gloo")
    if distributed and dev.type == "cuda":
        dev = torch.device("cuda", ddp.local_rank())
        torch.cuda.set_device(dev)
    return dev, distributed


@dataclass
class _EarlyStopping:
    """The best validation loss so far, its epoch, and the epochs since it improved; saved
    in every checkpoint (as a dict, the checkpoint format's ``early_stopping``)."""

    best_loss: float = math.inf
    best_epoch: int | None = None
    bad_epochs: int = 0

    def update(self, val_loss: float, epoch: int) -> bool:
        """Record an epoch's validation loss; True if it is a new best."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def exhausted(self, patience: int | None) -> bool:
        return patience is not None and self.bad_epochs >= patience


class _Checkpoints:
    """``last.pt`` after every epoch and ``best.pt`` at every new best, written atomically
    by the main process only; nothing when ``directory`` is None."""

    def __init__(self, directory: Path | None, main: bool):
        self.directory, self.main = directory, main
        self.last = directory / LAST_CHECKPOINT if directory is not None else None

    def save_best(self, epoch: int, state: dict) -> None:
        if self.directory is not None and self.main:
            save_atomic({"format": _FORMAT, "epoch": epoch, "model": state},
                        self.directory / BEST_CHECKPOINT)

    def save_last(self, epoch, seed, model, opt, sched, scaler, history, stop) -> None:
        if self.last is not None and self.main:
            save_atomic({"format": _FORMAT, "epoch": epoch, "seed": seed,
                         "model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict() if sched is not None else None,
                         "scaler": scaler.state_dict() if scaler is not None else None,
                         "rng": rng_state(), "history": history.to_dict(),
                         "early_stopping": asdict(stop)}, self.last)


def _start_or_resume(ckpt: _Checkpoints, resume: bool, seed, model, opt, sched, scaler):
    """(history, first epoch, early-stopping state, best weights so far): from ``last.pt``
    when resuming (model, optimizer, scheduler, scaler and every RNG restored), else a fresh
    start seeded from ``seed``."""
    if ckpt.last is not None and resume and ckpt.last.exists():
        state = load_checkpoint(ckpt.last)
        _restore(state, model, opt, sched, scaler, ckpt.last)
        stop = _EarlyStopping(**state["early_stopping"])
        if state.get("seed") != seed:
            log.warning("resuming %s saved with seed=%r, but fit was called with seed=%r; the "
                        "saved seed's data order is not reproduced", ckpt.last, state.get("seed"),
                        seed)
        best_path = ckpt.directory / BEST_CHECKPOINT
        best_state = None
        if stop.best_epoch is not None and best_path.exists():
            best_state = load_checkpoint(best_path)["model"]
        log.info("resumed from %s after epoch %d", ckpt.last, int(state["epoch"]))
        return History.from_dict(state["history"]), int(state["epoch"]), stop, best_state
    if ckpt.last is not None and ckpt.last.exists():
        log.warning("resume=False: starting over; %s will be overwritten", ckpt.last)
    if seed is not None:
        seed_everything(seed, deterministic=None)
    return History(), 0, _EarlyStopping(), None


def _epoch_row(epoch: int, tr: dict, va: dict | None, lr: float, metrics) -> dict:
    """An epoch's History record (``seconds`` is added by the caller)."""
    row = {"epoch": epoch, "train_loss": tr["loss"], "train_acc": tr["acc"], "lr": lr}
    if va is not None:
        row.update(val_loss=va["loss"], val_acc=va["acc"])
    for k in metrics or {}:
        row[f"train_{k}"] = tr[k]
        if va is not None:
            row[f"val_{k}"] = va[k]
    return row


def _restore(state: dict, model, opt, sched, scaler, path: Path) -> None:
    if state.get("format") != _FORMAT:
        raise RuntimeError(f"{path} has checkpoint format {state.get('format')!r}, expected "
                           f"{_FORMAT}; delete it or pass resume=False")
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise RuntimeError(f"{path} does not match this model/optimizer ({exc}). It belongs to "
                           "another run: use another checkpoint_dir, delete it, or pass "
                           "resume=False") from exc
    if sched is not None:
        if state.get("scheduler") is None:
            raise RuntimeError(f"{path} was saved without a scheduler but fit got one; "
                               "use the same settings to resume, or resume=False")
        sched.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])

