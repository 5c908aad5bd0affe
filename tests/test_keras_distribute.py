"""MirroredStrategy over two logical CPU devices trains like one device.

TensorFlow fixes its devices when it first initialises them, and the pytest process has
done that long before this test runs, so the distributed run happens in a fresh
interpreter: it splits the CPU in two, trains the same small model on one device and on
both, and reports the largest weight difference.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ck = pytest.importorskip("course_utils.keras")

SCRIPT = r"""
import json
import numpy as np
from course_utils import keras as ck

devices = ck.configure_cpu_devices(2)
keras = ck.keras

def build():
    # no BatchNorm (its statistics are per replica) and no dropout (random per replica)
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])

rng = np.random.default_rng(0)
x = rng.integers(0, 256, size=(256, 8, 8), dtype=np.uint8)
y = rng.integers(0, 10, size=256)
single = build()
init = [w.copy() for w in single.get_weights()]
ck.compile_model(single, lr=0.05, optimizer="sgd")
h1 = ck.fit(single, ck.TFLoader(x, y, 64, shuffle=True, seed=0), epochs=2, seed=0, progress=False)

strategy = ck.mirrored_strategy()
with strategy.scope():
    mirrored = build()
    mirrored.set_weights(init)
    ck.compile_model(mirrored, lr=0.05, optimizer="sgd")
h2 = ck.fit(mirrored, ck.TFLoader(x, y, 64, shuffle=True, seed=0), epochs=2, seed=0, progress=False)

print(json.dumps({
    "devices": devices,
    "replicas": strategy.num_replicas_in_sync,
    "variable_devices": sorted({c.device for c in mirrored.trainable_variables[0].value.values}),
    "diff": max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), mirrored.get_weights())),
    "moved": max(float(np.abs(a - b).max()) for a, b in zip(init, mirrored.get_weights())),
    "loss_single": h1["train_loss"], "loss_mirrored": h2["train_loss"],
}))
"""


def test_mirrored_strategy_on_two_cpus_matches_one_device():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and len(out["devices"]) == 2
    assert len(out["variable_devices"]) == 2  # one copy of each variable per device
    assert out["moved"] > 1e-2  # training really happened
    assert out["diff"] < 1e-4
    np.testing.assert_allclose(out["loss_mirrored"], out["loss_single"], rtol=1e-4)


def test_configuring_devices_after_tensorflow_started_says_what_to_do():
    ck.tf.constant(1.0)  # TensorFlow is initialised in this process now
    n = len(ck.tf.config.list_logical_devices("CPU"))
    with pytest.raises(RuntimeError, match="fresh process"):
        ck.configure_cpu_devices(n + 1)
