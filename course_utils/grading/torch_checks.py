"""Checkers for PyTorch answers: frozen layers, parameter counts, optimizer parameter
groups, BatchNorm modes and partially loaded state dicts.

They look at behaviour-defining state, never at how it was produced: the ``requires_grad``
flags, the optimizer's parameter groups as sets of tensors with their learning rates, the
``training`` flag of BatchNorm layers and the tensors' values. Any correct solution passes,
whether it loops over ``named_parameters()``, calls ``requires_grad_()`` on modules or uses
``course_utils.models.freeze``.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from course_utils.grading._common import (GradingSetupError, checker, fail, listing, plural,
                                          unit_of)

__all__ = ["check_frozen", "check_trainable_count", "check_param_groups",
           "check_bn_in_inference", "check_state_dict_loaded", "trainable_names"]


def _need_module(model: Any, name: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise AssertionError(f"{name}: expected a torch.nn.Module, got {type(model).__name__}"
                             + ("; did your function forget to return the model?" if model is None else ""))
    return model


def _matches(param_name: str, prefix: str) -> bool:
    return prefix == "" or param_name == prefix or param_name.startswith(prefix + ".")


def _resolve_prefixes(model: nn.Module, items, arg: str) -> list[str]:
    """Names (strings) or modules of ``model`` -> module-name prefixes."""
    if isinstance(items, (str, nn.Module)):
        items = [items]
    module_names = {id(m): n for n, m in model.named_modules()}
    out = []
    for it in items:
        if isinstance(it, str):
            out.append(it)
        elif isinstance(it, nn.Module):
            if id(it) not in module_names:
                raise AssertionError(f"{arg}: a {type(it).__name__} module is not part of the model "
                                     "(was it replaced after the checker's reference was taken?)")
            out.append(module_names[id(it)])
        else:
            raise GradingSetupError(f"{arg} should list module names or modules, got {type(it).__name__}")
    return out


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters with ``requires_grad=True``."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


@checker
def check_frozen(model: Any, expected_trainable: Iterable[str | nn.Module] | str, *,
                 name: str = "model") -> None:
    """Assert that exactly the parameters under ``expected_trainable`` require gradients.

    ``expected_trainable`` lists module names (``["layer4", "fc"]``; a name covers the module
    and everything inside it) or the modules themselves; ``[]`` means the whole model is
    frozen. Every other parameter must have ``requires_grad=False``. The message names each
    module that is wrong, e.g. ``layer4 is still frozen: expected requires_grad=True on its 8
    parameter tensors``.
    """
    model = _need_module(model, name)
    prefixes = _resolve_prefixes(model, expected_trainable, "expected_trainable")
    params = list(model.named_parameters())
    if not params:
        raise AssertionError(f"{name} has no parameters at all")
    problems: list[str] = []
    covered: set[str] = set()
    for prefix in prefixes:
        under = [(n, p) for n, p in params if _matches(n, prefix)]
        if not under:
            raise AssertionError(f"{name} has no parameters under {prefix!r}: was that module "
                                 "removed or renamed (e.g. a new head assigned to a different attribute)?")
        covered.update(n for n, _ in under)
        frozen = [n for n, p in under if not p.requires_grad]
        if len(frozen) == len(under):
            problems.append(f"{prefix or 'the model'} is still frozen: expected requires_grad=True on "
                            f"its {plural(len(under), 'parameter tensor')}")
        elif frozen:
            problems.append(f"{prefix} is partly frozen: {len(frozen)} of its {len(under)} parameter "
                            f"tensors have requires_grad=False ({listing(frozen)})")
    wrong: "OrderedDict[str, list[str]]" = OrderedDict()
    totals: dict[str, int] = {}
    for n, p in params:
        if n in covered:
            continue
        u = unit_of(n)
        totals[u] = totals.get(u, 0) + 1
        if p.requires_grad:
            wrong.setdefault(u, []).append(n)
    for u, names in wrong.items():
        problems.append(f"{u} should be frozen, but {len(names)} of its {totals[u]} parameter tensors "
                        f"{'has' if len(names) == 1 else 'have'} requires_grad=True ({listing(names)})")
    expected_desc = ", ".join(prefixes) if prefixes else "nothing (all frozen)"
    fail(f"{name}: the frozen/trainable parameters are not as expected (trainable should be: "
         f"{expected_desc}):", problems)


@checker
def check_trainable_count(model: Any, expected: int, *, name: str = "model") -> None:
    """Assert that ``model`` has ``expected`` trainable scalars (``requires_grad=True``);
    the message shows where the trainable parameters are now."""
    model = _need_module(model, name)
    if int(expected) != expected or expected < 0:
        raise GradingSetupError(f"check_trainable_count(expected={expected!r}) must be a count")
    got = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if got == expected:
        return
    per_unit: "OrderedDict[str, int]" = OrderedDict()
    for n, p in model.named_parameters():
        if p.requires_grad:
            u = unit_of(n)
            per_unit[u] = per_unit.get(u, 0) + p.numel()
    where = ", ".join(f"{u} ({c:,})" for u, c in list(per_unit.items())[:6])
    if len(per_unit) > 6:
        where += f" and {len(per_unit) - 6} more modules"
    raise AssertionError(f"{name} has {got:,} trainable parameters, expected {int(expected):,}. "
                         f"Trainable now: {where or 'nothing'}")


def _groups_of(optimizer: Any, default_lr: float | None) -> list[dict]:
    """Normalise an optimizer or a list of param-group dicts to [{params: [...], lr: ...}]."""
    if isinstance(optimizer, torch.optim.Optimizer):
        groups = optimizer.param_groups
        default_lr = optimizer.defaults.get("lr", default_lr)
    elif isinstance(optimizer, (list, tuple)):
        groups = list(optimizer)
    else:
        raise AssertionError(f"expected a torch.optim.Optimizer or a list of parameter-group dicts, "
                             f"got {type(optimizer).__name__}")
    out = []
    for i, g in enumerate(groups):
        if isinstance(g, (nn.Parameter, torch.Tensor)):
            raise AssertionError("the optimizer was given a flat list of tensors, not parameter "
                                 "groups: pass a list of dicts like {'params': [...], 'lr': ...}")
        if not isinstance(g, Mapping) or "params" not in g:
            raise AssertionError(f"param group {i} should be a dict with a 'params' key, got "
                                 f"{type(g).__name__}: {g!r:.60}")
        params = g["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        lr = g.get("initial_lr", g.get("lr", default_lr))  # initial_lr: a scheduler may have stepped
        out.append({"params": params, "lr": None if lr is None else float(lr)})
    return out


@checker
def check_param_groups(optimizer: Any, model: Any, base_lr: float, head_lr_mult: float, *,
                       head: str | nn.Module | Iterable[str | nn.Module], allow_frozen: bool = False,
                       name: str = "optimizer") -> None:
    """Assert that ``optimizer`` trains every trainable parameter of ``model`` exactly once,
    the head at ``base_lr * head_lr_mult`` and everything else at ``base_lr``.

    ``optimizer`` is a ``torch.optim.Optimizer`` or the list of parameter-group dicts you
    would pass to one (then a group without ``"lr"`` counts as ``base_lr``). ``head`` names
    the classifier module(s) (``"fc"``, ``"_fc"``) or gives them. Groups are compared as sets
    of tensors, so any grouping works: one group per layer, two groups, or more. Frozen
    parameters must be left out unless ``allow_frozen``. A scheduler's ``initial_lr`` is
    used when present, so checking after a scheduler step works too.
    """
    model = _need_module(model, "model")
    if base_lr <= 0 or head_lr_mult <= 0:
        raise GradingSetupError("check_param_groups: base_lr and head_lr_mult must be positive")
    head_prefixes = _resolve_prefixes(model, head, "head")
    groups = _groups_of(optimizer, base_lr)
    names = {id(p): n for n, p in model.named_parameters()}
    all_params = dict(model.named_parameters())
    for prefix in head_prefixes:
        if not any(_matches(n, prefix) for n in all_params):
            raise AssertionError(f"model has no parameters under the head {prefix!r}: did you replace "
                                 "the head under a different attribute name?")
    head_lr = base_lr * head_lr_mult
    problems: list[str] = []
    seen: dict[int, int] = {}
    wrong_lr: "OrderedDict[tuple, list[str]]" = OrderedDict()
    strangers: list[str] = []
    frozen_in: "OrderedDict[int, list[str]]" = OrderedDict()
    for gi, g in enumerate(groups):
        if g["lr"] is None:
            problems.append(f"param group {gi} has no learning rate")
            continue
        for p in g["params"]:
            if id(p) not in names:
                strangers.append(f"param group {gi} holds a tensor of shape {tuple(p.shape)} that is not a "
                                 "parameter of the model (was the optimizer built before the head was replaced?)")
                continue
            n = names[id(p)]
            if id(p) in seen:
                problems.append(f"{n!r} appears in param groups {seen[id(p)]} and {gi}: PyTorch refuses "
                                "a parameter in two groups")
                continue
            seen[id(p)] = gi
            if not p.requires_grad and not allow_frozen:
                frozen_in.setdefault(gi, []).append(n)
                continue
            is_head = any(_matches(n, h) for h in head_prefixes)
            want = head_lr if is_head else base_lr
            if not math.isclose(g["lr"], want, rel_tol=1e-6, abs_tol=1e-12):
                wrong_lr.setdefault((gi, is_head, g["lr"]), []).append(n)
    problems = strangers[:3] + problems
    for gi, ns in frozen_in.items():
        problems.append(f"param group {gi} holds {plural(len(ns), 'frozen parameter tensor')} "
                        f"(requires_grad=False: {listing(ns)}); leave frozen parameters out of the optimizer")
    for (gi, is_head, lr), ns in wrong_lr.items():
        units = listing(list(OrderedDict.fromkeys(unit_of(n) for n in ns)))
        if is_head:
            problems.append(f"head parameters ({listing(ns)}) are in param group {gi} with lr={lr:g}; "
                            f"expected base_lr x head_lr_mult = {base_lr:g} x {head_lr_mult:g} = {head_lr:g}")
        else:
            problems.append(f"{plural(len(ns), 'backbone parameter tensor')} of {units} "
                            f"{'is' if len(ns) == 1 else 'are'} in param group {gi} with lr={lr:g}; "
                            f"expected base_lr = {base_lr:g}")
    missing = [n for n, p in all_params.items() if p.requires_grad and id(p) not in seen]
    if missing:
        by_unit: "OrderedDict[str, int]" = OrderedDict()
        for n in missing:
            by_unit[unit_of(n)] = by_unit.get(unit_of(n), 0) + 1
        problems.append(f"{plural(len(missing), 'trainable parameter tensor')} "
                        f"{'is' if len(missing) == 1 else 'are'} in no param group, so "
                        f"{'it' if len(missing) == 1 else 'they'} would never be updated: "
                        + listing([f"{u} ({c})" for u, c in by_unit.items()], 4))
    fail(f"{name}: the parameter groups are not as expected (head {listing(head_prefixes)} at "
         f"lr={head_lr:g}, the rest of the trainable parameters at lr={base_lr:g}):", problems)


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


@checker
def check_bn_in_inference(model: Any, *, frozen_only: bool = True, x: torch.Tensor | None = None,
                          name: str = "model") -> None:
    """Assert that BatchNorm layers run in inference mode (``module.training is False``).

    With ``frozen_only`` (the default) this applies to the BatchNorm layers whose affine
    parameters are all frozen: in ``model.train()`` mode they would still update their
    running statistics, although ``requires_grad=False``, and the frozen features would
    drift. BatchNorm layers inside trainable parts may train. Given an input batch ``x``, a
    forward pass in the model's current modes must also leave those layers' running
    statistics unchanged (the model is restored afterwards).
    """
    model = _need_module(model, name)
    targets = []
    for n, m in model.named_modules():
        if not _is_bn(m):
            continue
        ps = list(m.parameters(recurse=False))
        frozen = all(not p.requires_grad for p in ps)
        if frozen or not frozen_only:
            targets.append((n, m))
    if not targets:
        raise AssertionError(f"{name} has no {'BatchNorm layer whose parameters are all frozen' if frozen_only else 'BatchNorm layer'}"
                             ", so there is nothing to check: did the freezing step run?")
    training = [n for n, m in targets if m.training]
    kind = "frozen BatchNorm layer" if frozen_only else "BatchNorm layer"
    if training:
        raise AssertionError(
            f"{name}: {plural(len(training), kind)} {'is' if len(training) == 1 else 'are'} in training "
            f"mode ({listing(training)}): in model.train() they keep updating their running mean and "
            "variance although requires_grad=False. Call .eval() on them after model.train().")
    if x is None:
        return
    state = {n: (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for n, m in targets if m.running_mean is not None}
    try:
        with torch.no_grad():
            model(x)
        moved = [n for n, m in targets if n in state and not torch.equal(m.running_mean, state[n][0])]
    finally:
        for n, m in targets:
            if n in state:
                m.running_mean.copy_(state[n][0])
                m.running_var.copy_(state[n][1])
                m.num_batches_tracked.copy_(state[n][2])
    if moved:
        raise AssertionError(f"{name}: a forward pass changed the running statistics of "
                             f"{plural(len(moved), kind)} ({listing(moved)})")


@checker
def check_state_dict_loaded(model: Any, expected: Mapping[str, torch.Tensor], *,
                            unchanged: Mapping[str, torch.Tensor] | None = None,
                            name: str = "model") -> None:
    """Assert that ``model``'s tensors were loaded as expected.

    ``expected`` maps ``model.state_dict()`` keys to the tensors they must now equal (the
    source weights that should have been copied in); ``unchanged`` maps keys to the values
    they must still have (e.g. a fresh head's initialisation, or layers above the point
    where loading should have stopped). Messages name the tensor and how far off it is.
    """
    model = _need_module(model, name)
    sd = model.state_dict()
    problems: list[str] = []
    for what, mapping in (("should have been loaded from the source, but it differs from the "
                           "source tensor", expected),
                          ("should have kept its value, but it was overwritten", unchanged or {})):
        for key, want in mapping.items():
            if key not in sd:
                problems.append(f"{key!r} is missing from {name}.state_dict()")
                continue
            got = sd[key].detach().cpu()
            want = want.detach().cpu()
            if tuple(got.shape) != tuple(want.shape):
                problems.append(f"{key!r} has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
            elif not torch.equal(got, want):
                diff = (got.double() - want.double()).abs().max().item()
                problems.append(f"{key!r} {what} (max abs difference {diff:.3g})")
    fail(f"{name}: the loaded weights are not as expected:", problems)
