"""The fixture-weights test hook of :mod:`course_utils.keras.models` (issue 14).

With ``COURSE_FIXTURE_WEIGHTS=1`` a ``keras.applications`` model loads the weight file found in
the Keras cache as it is, without Keras's pinned-hash check, so the ``full`` profile can run
offline on random stand-in weights (``tests/_full_fixtures.py``). The hook must really load
that file (not fall back to random initialisation), and without it the same unverified file
must never be loaded. Offline (every proxy at a closed port) and on 32-pixel inputs, so fast.
"""
from __future__ import annotations

import logging
import shutil

import h5py
import numpy as np
import pytest

from _full_fixtures import _build_keras_weights, offline_env
from course_utils.keras import keras
from keras.src.backend import config as keras_config
from course_utils.keras.models import (FIXTURE_WEIGHTS_ENV, PretrainedWeightsUnavailable,
                                       create_model, keras_cache_path, keras_weights_url)

FNAME, URL = keras_weights_url("vgg16", include_top=False)
LAYERS = ("block1_conv1", "block3_conv2", "block5_conv3")


@pytest.fixture(scope="module")
def fixture_file(tmp_path_factory):
    """Random VGG16 (no top) weights in the legacy HDF5 layout, as tests/_full_fixtures.py
    writes them."""
    home = tmp_path_factory.mktemp("keras_fixture")
    _build_keras_weights(home)
    return home / "models" / FNAME


@pytest.fixture
def keras_home(fixture_file, tmp_path, monkeypatch):
    """A Keras cache holding a copy of the fixture file (a test may make Keras replace it),
    with the network cut."""
    (tmp_path / "models").mkdir()
    shutil.copy(fixture_file, tmp_path / "models" / FNAME)
    _use_keras_home(tmp_path, monkeypatch)
    return tmp_path


def _use_keras_home(home, monkeypatch) -> None:
    """$KERAS_HOME = ``home``, offline. Keras reads $KERAS_HOME once, when it is imported (a
    notebook's kernel starts with it set), so its own copy is pointed there too."""
    for key, value in {"KERAS_HOME": str(home), **offline_env()}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))
    assert keras_config.keras_home() == str(home)


def _file_weights(path, layer: str) -> list[np.ndarray]:
    with h5py.File(path, "r") as f:
        return [f[layer][f"{layer}/kernel"][()], f[layer][f"{layer}/bias"][()]]


def test_hook_loads_the_cached_file(keras_home, monkeypatch, caplog):
    monkeypatch.setenv(FIXTURE_WEIGHTS_ENV, "1")
    path = keras_cache_path(FNAME)
    assert path == keras_home / "models" / FNAME
    with caplog.at_level(logging.WARNING, logger="course_utils.keras.models"):
        model = create_model("vgg16", weights="imagenet", include_top=False, input_shape=(32, 32, 3))
    for layer in LAYERS:
        kernel, bias = model.get_layer(layer).get_weights()
        want_kernel, want_bias = _file_weights(path, layer)
        assert kernel.shape == want_kernel.shape and np.array_equal(kernel, want_kernel), layer
        assert np.array_equal(bias, want_bias), layer
    # the warning names the file and the hook, on every build
    assert any(str(path) in r.getMessage() and FIXTURE_WEIGHTS_ENV in r.getMessage()
               for r in caplog.records)
    # a random build differs: the equality above comes from the file
    fresh = create_model("vgg16", include_top=False, input_shape=(32, 32, 3))
    assert not np.array_equal(fresh.get_layer("block5_conv3").get_weights()[0],
                              model.get_layer("block5_conv3").get_weights()[0])


@pytest.mark.parametrize("value", [None, "0", "true"])
def test_without_the_hook_the_unverified_file_is_not_loaded(keras_home, monkeypatch, capsys, value):
    if value is None:
        monkeypatch.delenv(FIXTURE_WEIGHTS_ENV, raising=False)
    else:  # only "1" switches the hook on
        monkeypatch.setenv(FIXTURE_WEIGHTS_ENV, value)
    loaded = []  # every weight file a model loads
    monkeypatch.setattr(keras.Model, "load_weights", lambda self, *a, **k: loaded.append(a))
    # Keras checks the cached file against its pinned hash, finds it is not the real one and
    # tries to download the real one, which fails offline: nothing is built from the file
    with pytest.raises(Exception, match="URL fetch failure") as err:
        create_model("vgg16", weights="imagenet", include_top=False, input_shape=(32, 32, 3))
    assert not loaded
    assert URL in str(err.value), str(err.value)
    assert "hash does not match" in capsys.readouterr().out  # Keras's own words for the refusal


def test_hook_does_not_skip_the_fetch_of_a_missing_file(tmp_path, monkeypatch):
    _use_keras_home(tmp_path, monkeypatch)
    monkeypatch.setenv(FIXTURE_WEIGHTS_ENV, "1")
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        create_model("vgg16", weights="imagenet", include_top=False, input_shape=(32, 32, 3))
    msg = str(err.value)
    assert URL in msg and str(tmp_path / "models" / FNAME) in msg, msg
