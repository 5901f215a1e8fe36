"""Run in a subprocess by tests/test_resume.py: build one of the CASES, then either read part of a pass, save the
iterator with tf.train.Checkpoint and go on reading (``save``), or restore that checkpoint into a new iterator
in this new process and read what follows (``restore``). Prints one JSON line: what was read."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import tensorflow as tf
from _resume_sources import Augmented, Nested, Records, Scalars, Tokens, hf_tokens, stream

import tfbridge as tb


def _ctx() -> Any:
    return tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)


def _with_ray(make: Any) -> Any:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    return make()


def _y(b: Any) -> Any:
    return b["y"]


def _label(b: Any) -> Any:
    return b[1]


def _first(b: Any) -> Any:
    return b[0]


def _self(b: Any) -> Any:
    return b


def _first_token(b: Any) -> Any:
    return b[:, 0]


def _id(b: Any) -> Any:
    return b["id"]


CASES = {  # name -> (the dataset, the ids of the examples an element holds)
    "serial-shuffled-batches": (
        lambda: tb.to_dataset(Records(203), executor="serial", shuffle=True, seed=7, batch_size=8),
        _y,
    ),
    "thread-shuffled-batches": (
        lambda: tb.to_dataset(Records(203), executor="thread", workers=3, shuffle=True, seed=7, batch_size=8),
        _y,
    ),
    "process-shuffled-augmented": (
        lambda: tb.to_dataset(Augmented(90), executor="process", workers=2, shuffle=True, seed=11, batch_size=4),
        _first,
    ),
    "process-unbatched": (lambda: tb.to_dataset(Records(40), executor="process", workers=2), _y),
    "ray-shuffled-augmented": (
        lambda: _with_ray(
            lambda: tb.to_dataset(Augmented(60), executor="ray", workers=2, shuffle=True, seed=11, batch_size=4)
        ),
        _first,
    ),
    "shuffled-without-seed": (
        lambda: tb.to_dataset(Records(120), executor="serial", shuffle=True, batch_size=4),
        _y,
    ),
    "label": (
        lambda: tb.to_dataset(Records(97), label="y", executor="thread", shuffle=True, seed=3, batch_size=5),
        _label,
    ),
    "input-context": (
        lambda: tb.to_dataset(
            Records(150), executor="serial", shuffle=True, seed=5, batch_size=4, input_context=_ctx()
        ),
        _y,
    ),
    "chunked-scalars": (lambda: tb.to_dataset(Scalars(5000), executor="serial", shuffle=True, seed=2), _self),
    "pad-batch": (
        lambda: tb.pad_batch(
            tb.to_dataset(Tokens(150), batched=False, shuffle=True, seed=9, executor="serial"), 8
        ),
        _first_token,
    ),
    "pad-batch-buckets": (
        lambda: tb.pad_batch(
            tb.to_dataset(Tokens(150), batched=False, shuffle=True, seed=9, executor="serial"), 8, buckets=[4, 8, 12]
        ),
        _first_token,
    ),
    "stream": (lambda: tb.to_dataset(stream, batch_size=4), _first),
    "ragged": (
        lambda: tb.to_dataset(Nested(60), batched=False, executor="thread", shuffle=True, seed=8),
        _id,
    ),
    "hf-blocks-buckets": (
        lambda: tb.pad_batch(
            tb.to_dataset(hf_tokens(300, True), label="label", shuffle=True, seed=4), 8, buckets=[4, 8]
        ),
        _label,
    ),
    "hf-in-memory": (
        lambda: tb.pad_batch(tb.to_dataset(hf_tokens(300, False), label="label", shuffle=True, seed=4), 8),
        _label,
    ),
}


def _plain(batch: Any) -> Any:
    return tf.nest.map_structure(
        lambda t: t.to_list() if isinstance(t, tf.RaggedTensor) else np.asarray(t).tolist(), batch
    )


def main() -> None:
    case, phase, path, at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    make, ids_of = CASES[case]
    ds = make()
    out: dict[str, Any] = {}
    it = iter(ds)
    ckpt = tf.train.Checkpoint(iterator=it)

    def read(batches: Any) -> list[Any]:
        return [(_plain(b), np.asarray(ids_of(b)).reshape(-1).tolist()) for b in batches]

    if phase == "save":
        out["before"] = read(next(it) for _ in range(at))
        ckpt.write(path)
    else:
        ckpt.read(path).assert_consumed()
    out["rest"] = read(it)
    out["later"] = [read(ds) for _ in range(2)]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
