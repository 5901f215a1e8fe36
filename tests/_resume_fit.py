"""Run by tests/test_resume_fit.py in a subprocess: a 3-epoch model.fit with tb.resume_callback, recording each
trained batch (the optimizer's step before it and the ids of its examples) in a file; with KILL_AT, the process
SIGKILLs itself when that step is reached, before training on it. Prints nothing; writes the final weights."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras
import numpy as np
import tensorflow as tf

import tfbridge as tb

BACKUP, RECORD, KILL_AT, WEIGHTS, EXECUTOR = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
SAVE_FREQ = int(sys.argv[6]) if len(sys.argv) > 6 else 3


class Examples:
    """40 examples: features (id and 3 values made from it), a target; with an epoch counter of its own hooks."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> Any:
        x = np.array([i % 7, (i * 3) % 5, (i * 5) % 11], np.float32) / 10
        return {"id": np.int64(i), "x": x}, np.float32(x.sum() * 0.5 - 0.2)


def record(step: Any, ids: Any) -> Any:
    step = int(step)
    if step == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    with open(RECORD, "a") as f:
        f.write(f"{step} {' '.join(str(int(i)) for i in ids)}\n")
    return np.int64(0)


class Net(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(1)

    def call(self, inputs: Any) -> Any:
        return self.dense(inputs["x"])

    def train_step(self, data: Any) -> Any:
        features, _ = data
        done = tf.numpy_function(record, [self.optimizer.iterations, features["id"]], tf.int64, stateful=True)
        with tf.control_dependencies([done]):
            return super().train_step(data)


def main() -> None:
    keras.utils.set_random_seed(1)
    if EXECUTOR == "stream":  # a generator function: unknown length, restored by reading again
        examples = Examples()
        ds = tb.to_dataset(lambda: (examples[i] for i in range(40)), batch_size=4)
    else:
        ds = tb.to_dataset(Examples(), executor=EXECUTOR, shuffle=True, seed=5, batch_size=4)
    model = Net()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model(next(iter(ds))[0])  # built before fit (a restored run loads its weights into it)
    model.fit(ds, epochs=3, verbose=0, callbacks=[tb.resume_callback(ds, BACKUP, save_freq=SAVE_FREQ)])
    np.save(WEIGHTS, np.concatenate([w.reshape(-1) for w in model.get_weights()]))


if __name__ == "__main__":
    main()
