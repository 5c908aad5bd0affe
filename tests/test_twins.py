"""The PyTorch and Keras twins keep one contract (issue 15).

Every public idea that exists on both sides is listed in ``PAIRS`` with the parameters only
one framework has, and why. The signature test compares the rest, parameter by parameter
(name, kind, default); the behaviour tests run both halves on a tiny model and compare what
comes back. A new public name on both sides that is not in ``PAIRS`` fails
``test_every_shared_public_name_is_a_listed_pair``, so the halves cannot drift apart
without someone writing down why.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

ck = pytest.importorskip("course_utils.keras")
torch = pytest.importorskip("torch")

from course_utils import curves, device, experiments, features, models, train  # noqa: E402
from course_utils.data import FastLoader  # noqa: E402
from course_utils.keras import experiments as kexp  # noqa: E402
from course_utils.keras import training as ktraining  # noqa: E402

#: what a framework has and the other does not, so no twin can take it
TORCH_DEVICE = "PyTorch places tensors by hand (device); TensorFlow places ops itself"
TORCH_LOOP = "the PyTorch loop is written out by the course (loss, AMP, accumulation ...)"
KERAS_APPS = "keras.applications' calling convention (include_top/input_shape/pooling)"
KERAS_FIT = "passed on to model.fit, or a loader made from an (x, y) pair"
KERAS_COMPILE = "None = keep what compile() set: a Keras model carries its optimizer"

#: (name, PyTorch callable, Keras callable, {param: why} PyTorch only, {param: why} Keras
#: only, {param: why} shared but with another default)
PAIRS = [
    ("create_model", models.create_model, ck.create_model, {},
     {"include_top": KERAS_APPS, "input_shape": KERAS_APPS, "pooling": KERAS_APPS}, {}),
    ("list_models", models.list_models, ck.list_models, {}, {}, {}),
    ("get_spec", models.get_spec, ck.get_spec, {}, {}, {}),
    ("get_model_weights", models.get_model_weights, ck.get_model_weights, {}, {}, {}),
    ("layer_groups", models.layer_groups, ck.layer_groups, {}, {}, {}),
    ("seed_everything", device.seed_everything, ck.seed_everything, {}, {}, {}),
    ("fit", train.fit, ck.fit,
     {"loss_fn": TORCH_LOOP, "metrics": TORCH_LOOP, "device": TORCH_DEVICE, "amp": TORCH_LOOP,
      "grad_accum": TORCH_LOOP, "channels_last": TORCH_LOOP, "clip_grad_norm": TORCH_LOOP,
      "scheduler_interval": TORCH_LOOP},
     {"batch_size": KERAS_FIT, "callbacks": KERAS_FIT, "class_weight": KERAS_FIT},
     {"lr": KERAS_COMPILE, "optimizer": KERAS_COMPILE, "weight_decay": KERAS_COMPILE}),
    ("evaluate", train.evaluate, ck.evaluate,
     {"device": TORCH_DEVICE, "loss_fn": TORCH_LOOP, "metrics": TORCH_LOOP, "amp": TORCH_LOOP,
      "channels_last": TORCH_LOOP},
     {"batch_size": KERAS_FIT}, {}),
    ("predict", train.predict, ck.predict, {"device": TORCH_DEVICE, "amp": TORCH_LOOP},
     {"batch_size": KERAS_FIT}, {}),
    ("extract_features", features.extract_features, ck.extract_features,
     {"transform": "a torchvision-style transform object", "device": TORCH_DEVICE},
     {"rgb": "TFLoader preprocessing", "mean": "TFLoader preprocessing",
      "std": "TFLoader preprocessing"}, {}),
    ("learning_curve", curves.learning_curve, ck.learning_curve, {}, {}, {}),
    ("FastLoader/TFLoader", FastLoader, ck.TFLoader,
     {"device": TORCH_DEVICE, "scale": "torch crop augmentation", "ratio": "torch crop augmentation",
      "crop_pct": "torch centre crop"}, {},
     {"y": "TFLoader(x) without labels feeds predict; a FastLoader always has labels"}),
    ("pretrain_source", experiments.pretrain_source, kexp.pretrain_source,
     {"device": TORCH_DEVICE}, {}, {}),
    ("finetune_vs_scratch", experiments.finetune_vs_scratch, kexp.finetune_vs_scratch, {}, {}, {}),
    ("torch_trainer/keras_trainer", experiments.torch_trainer, kexp.keras_trainer,
     {"device": TORCH_DEVICE, "crop_pct": "torch centre crop (as FastLoader's)"}, {},
     {"eval_batch_size": "64 in PyTorch: a 500-image batch of activations page-faults through "
                         "fresh memory every batch (2.4x the CPU); Keras measured the same at both"}),
    ("load_pretrained_torch/keras", experiments.load_pretrained_torch, kexp.load_pretrained_keras,
     {"num_classes": "a PyTorch model gets its new head after loading",
      "reset_head": "a PyTorch model gets its new head after loading"},
     {"head": "a Keras model is built with its new head, whose layer loading skips"}, {}),
]

#: public twins whose names differ by framework
RENAMED = {"FastLoader": "TFLoader", "torch_trainer": "keras_trainer",
           "load_pretrained_torch": "load_pretrained_keras", "Weights": "KerasWeights",
           "ModelSpec": "KerasModelSpec"}
#: names on both sides that are constants, or one shared object (checked for identity)
NOT_CALLABLE_PAIRS = {"SOURCE_CLASSES", "TARGET_CLASSES", "NonFiniteLossError"}


@pytest.mark.parametrize("name, t, k, torch_only, keras_only, other_default", PAIRS,
                         ids=[p[0] for p in PAIRS])
def test_twin_signatures_agree(name, t, k, torch_only, keras_only, other_default):
    ts, ks = inspect.signature(t).parameters, inspect.signature(k).parameters
    assert set(torch_only) <= set(ts) and not set(torch_only) & set(ks), name
    assert set(keras_only) <= set(ks) and not set(keras_only) & set(ts), name
    assert set(ts) - set(torch_only) == set(ks) - set(keras_only), (
        f"{name}: only in PyTorch {sorted(set(ts) - set(ks) - set(torch_only))}, only in Keras "
        f"{sorted(set(ks) - set(ts) - set(keras_only))}")
    shared = [p for p in ts if p not in torch_only]
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    assert ([p for p in shared if ts[p].kind in positional]
            == [p for p in ks if p not in keras_only and ks[p].kind in positional]), (
        f"{name}: positional parameters differ in order")
    for p in shared:
        assert ts[p].kind == ks[p].kind, f"{name}({p}): {ts[p].kind} vs {ks[p].kind}"
        if p not in other_default:
            assert ts[p].default == ks[p].default, (
                f"{name}({p}): default {ts[p].default!r} (PyTorch) vs {ks[p].default!r} (Keras)")


def test_every_shared_public_name_is_a_listed_pair():
    import course_utils.data as cdata

    torch_side = set()
    for mod in (models, train, device, features, curves, experiments, cdata):
        torch_side |= set(mod.__all__)
    keras_side = set(ck.__all__) | set(kexp.__all__)
    listed = {part for p in PAIRS for part in p[0].split("/")}
    shared = {n for n in torch_side & keras_side if n not in NOT_CALLABLE_PAIRS}
    assert shared <= listed, f"public on both sides but without a contract: {sorted(shared - listed)}"
    for t_name, k_name in RENAMED.items():
        assert t_name in torch_side and k_name in keras_side, (t_name, k_name)
    assert kexp.SOURCE_CLASSES == experiments.SOURCE_CLASSES
    assert kexp.TARGET_CLASSES == experiments.TARGET_CLASSES
    assert ck.NonFiniteLossError is train.NonFiniteLossError


def test_the_keras_learning_curve_is_the_framework_neutral_one():
    assert ck.learning_curve is curves.learning_curve
    first = next(iter(inspect.signature(ck.learning_curve).parameters))
    assert first == "train_and_score"


# --- behaviour on a tiny model ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["small_cnn", "efficientnet_lite0"])
def test_layer_groups_have_the_same_names_and_hold_layers(name):
    kw = {} if name == "small_cnn" else {"include_top": True, "input_shape": (32, 32, 3)}
    tg = models.layer_groups(models.create_model(name))
    kg = ck.layer_groups(ck.create_model(name, **kw))
    assert list(tg) == list(kg)
    if name == "efficientnet_lite0":
        assert list(tg) == ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["head", "classifier"]
    assert all(isinstance(m, torch.nn.Module) for ms in tg.values() for m in ms)
    assert all(isinstance(lyr, ck.keras.layers.Layer) for ls in kg.values() for lyr in ls)


def test_mobilenet_v2_groups_match_torchvision_stages():
    base = ck.create_model("mobilenet_v2", include_top=False, input_shape=(32, 32, 3))
    groups = ck.layer_groups(base)
    assert list(groups) == ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["head"]
    assert groups["stage7"][0].name.startswith("block_16_")
    assert {lyr.name.split("_")[1] for lyr in groups["stage4"]} == {"6", "7", "8", "9"}


@pytest.mark.parametrize("bad, error", [("1", TypeError), (True, TypeError), (1.5, TypeError),
                                        (-1, ValueError), (2**32, ValueError)])
def test_seed_everything_refuses_the_same_seeds_the_same_way(bad, error):
    for seed_everything in (device.seed_everything, ck.seed_everything):
        with pytest.raises(error, match="seed"):
            seed_everything(bad)
    assert device.seed_everything(np.int64(3)) == ck.seed_everything(np.int64(3)) == 3


def test_adamw_weight_decay_zero_means_zero_on_both_sides():
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert train.OPTIMIZERS["adamw"](p, 1e-3, 0.0).param_groups[0]["weight_decay"] == 0
    model = ck.create_model("small_cnn")
    ck.compile_model(model, optimizer="adamw", weight_decay=0.0)
    assert float(model.optimizer.weight_decay) == 0.0
    ck.compile_model(model, optimizer="adamw", weight_decay=0.05)
    assert float(model.optimizer.weight_decay) == pytest.approx(0.05)


def test_weights_enums_and_names_agree():
    tw, kw = models.get_model_weights("efficientnet_lite0"), ck.get_model_weights("efficientnet_lite0")
    assert [m.name for m in tw] == [m.name for m in kw] == ["IMAGENET1K_V1"]
    assert tw.DEFAULT.name == kw.DEFAULT.name == "IMAGENET1K_V1"
    assert callable(tw.DEFAULT.transforms()) and callable(kw.DEFAULT.transforms())
    assert list(models.get_model_weights("small_cnn")) == list(ck.get_model_weights("small_cnn")) == []
    for create in (models.create_model, ck.create_model):
        for bad in ("DEFAULT", "imagenet", "IMAGENET1K_V1"):
            with pytest.raises(ValueError, match=r"create_model\('small_cnn'\): no weights"):
                create("small_cnn", weights=bad)
        with pytest.raises(TypeError, match="unknown option"):
            create("small_cnn", colour=True)
    # "imagenet" (Keras's spelling), "DEFAULT", the enum member: one name, both sides
    assert all(models.create_model("efficientnet_lite0", weights=w).course_weights.name
               == "IMAGENET1K_V1" for w in ("imagenet", "DEFAULT", tw.DEFAULT, True))


def test_weights_aliases_resolve_alike_in_keras():
    kw = ck.get_model_weights("efficientnet_lite0")
    for w in ("imagenet", "DEFAULT", kw.DEFAULT, "IMAGENET1K_V1"):
        m = ck.create_model("efficientnet_lite0", weights=w, include_top=False,
                            input_shape=(32, 32, 3))
        assert m.course_weights.name == "IMAGENET1K_V1"


def _epoch_orders(loader, n=3):
    return [np.asarray(next(iter(loader))[1]).tolist() for _ in range(n)]


def test_loaders_advance_the_epoch_on_iteration_alike():
    x = np.random.default_rng(0).integers(0, 255, (40, 8, 8), dtype=np.uint8)
    y = np.arange(40)
    for loader in (FastLoader(x, y, 40, shuffle=True, seed=1), ck.TFLoader(x, y, 40, shuffle=True, seed=1)):
        first, second, third = _epoch_orders(loader)
        assert first != second and second != third and loader.epoch == 3
        loader.set_epoch(1)
        assert np.asarray(next(iter(loader))[1]).tolist() == second
        assert len(loader) == 1 and loader.num_samples == 40


def test_fit_evaluate_predict_and_features_return_the_same_shapes():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (24, 28, 28), dtype=np.uint8)
    y = (np.arange(24) % 10).astype(np.int64)
    spec = models.get_spec("small_cnn")
    tl = FastLoader(x, y, 8, shuffle=True, seed=0, mean=spec.mean, std=spec.std)
    tv = FastLoader(x, y, 8, shuffle=False, seed=None, mean=spec.mean, std=spec.std)
    kl = ck.TFLoader(x, y, 8, shuffle=True, seed=0, mean=spec.mean, std=spec.std)
    kv = ck.TFLoader(x, y, 8, mean=spec.mean, std=spec.std)
    device.seed_everything(0)
    tm = models.create_model("small_cnn")
    ck.seed_everything(0)
    km = ck.create_model("small_cnn")
    th = train.fit(tm, tl, tv, epochs=2, progress=False)
    kh = ck.fit(km, kl, kv, epochs=2, progress=False)
    assert len(th) == len(kh) == 2
    assert set(th.records[0]) == set(kh.records[0])
    assert th.best_epoch in (1, 2) and kh.best_epoch in (1, 2)
    te, ke = train.evaluate(tm, tv), ck.evaluate(km, kv)
    assert set(te) == set(ke) == {"loss", "acc"}
    assert all(isinstance(v, float) for v in (*te.values(), *ke.values()))
    tp, kp = train.predict(tm, tv), ck.predict(km, kv)
    assert tp.shape == kp.shape == (24, 10) and tp.dtype == kp.dtype == np.float32
    for fx, model in ((features.extract_features, tm), (ck.extract_features, km)):
        out = fx(model, x, cache=False, progress=False, return_labels=True)
        assert isinstance(out, tuple) and out[0].shape[0] == 24 and out[1] is None


@pytest.mark.parametrize("kwargs, match", [({"epochs": 0}, r"epochs = 0; it must be a positive int"),
                                           ({"epochs": 1, "early_stopping": 2},
                                            "early_stopping needs validation data"),
                                           ({"epochs": 1, "early_stopping": 0, "val": "v"},
                                            r"early_stopping = 0; give a patience")])
def test_fit_refuses_the_same_arguments_with_the_same_message(kwargs, match):
    x = np.zeros((4, 28, 28), np.uint8)
    y = np.zeros(4, np.int64)
    kwargs = dict(kwargs)
    tval = FastLoader(x, y, 2) if kwargs.pop("val", None) else None
    kval = ck.TFLoader(x, y, 2) if tval is not None else None
    with pytest.raises(ValueError, match=match):
        train.fit(models.create_model("small_cnn"), FastLoader(x, y, 2), tval, progress=False, **kwargs)
    with pytest.raises(ValueError, match=match):
        ck.fit(ck.create_model("small_cnn"), ck.TFLoader(x, y, 2), kval, progress=False, **kwargs)


def test_a_nonfinite_training_or_validation_loss_raises_the_same_error():
    from course_utils.errors import NonFiniteLossError

    assert ck.NonFiniteLossError is train.NonFiniteLossError is NonFiniteLossError
    rng = np.random.default_rng(0)
    x = rng.random((8, 4)).astype(np.float32)
    y = np.arange(8) % 2
    bad = x.copy()
    bad[3, 0] = np.nan
    def batches(a):
        return [(torch.from_numpy(a[i:i + 4]), torch.from_numpy(y[i:i + 4])) for i in (0, 4)]

    for data, val, where in ((bad, x, "training"), (x, bad, "validation")):
        with pytest.raises(NonFiniteLossError, match=f"the {where} loss became nan at epoch 1"):
            train.fit(torch.nn.Sequential(torch.nn.Linear(4, 2)), batches(data), batches(val),
                      epochs=2, progress=False)
        kmodel = ck.keras.Sequential([ck.keras.Input((4,)), ck.keras.layers.Dense(2)])
        with pytest.raises(NonFiniteLossError, match=f"the {where} loss became nan at epoch 1"):
            ck.fit(kmodel, ck.TFLoader(data, y, 4), ck.TFLoader(val, y, 4), epochs=2, lr=1e-3,
                   progress=False)


def test_registries_and_specs_agree():
    shared = set(models.list_models()) & set(ck.list_models())
    assert {"small_cnn", "efficientnet_lite0", "vgg16", "mobilenet_v2"} <= shared
    for name in ("small_cnn", "efficientnet_lite0"):
        t, k = models.get_spec(name), ck.get_spec(name)
        assert (t.mean, t.std) == (k.mean, k.std)
        assert t.input_size[0] == k.input_shape[-1] and t.input_size[1:] == k.input_shape[:2]
        assert t.default_num_classes == k.default_num_classes
        assert list(t.weights) == list(k.weights)
    for get_spec in (models.get_spec, ck.get_spec):
        with pytest.raises(ValueError, match="unknown.*'resnet5'"):
            get_spec("resnet5")
