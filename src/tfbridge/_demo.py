"""``tfbridge demo``: the situations of the two hand recipes, end to end, on generated data.

Each scenario prints the inferred spec and the generated code, builds a model from ``keras_inputs``, trains
one short epoch on ``to_dataset``, and says what tfbridge caught that the hand recipe gets wrong.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np

_RNG_SEED = 0


def _section(title: str) -> None:
    print("\n" + "=" * 78 + f"\n{title}\n" + "=" * 78)


def _show(source: Any, **kw: Any) -> Any:
    import tfbridge as tb

    spec = tb.infer_spec(source, **kw)
    print("inferred spec:")
    print(textwrap.indent(repr(spec), "  "))
    print("generated code (spec.code()):")
    print(textwrap.indent(spec.code(), "  "))
    return spec


def _train(model: Any, ds: Any, loss: str) -> None:
    model.compile(optimizer="adam", loss=loss)
    history = model.fit(ds, epochs=1, verbose=0)
    print(f"trained one epoch: loss {history.history['loss'][-1]:.4f}")


def _caught(*lines: str) -> None:
    print("what tfbridge caught:")
    for line in lines:
        print(textwrap.fill(line, 76, initial_indent="  - ", subsequent_indent="    "))


def dense_features() -> None:
    import keras
    import tensorflow as tf

    import tfbridge as tb

    _section("1. Dense features: a tf.data BatchDataset -> keras.Input")
    rng = np.random.default_rng(_RNG_SEED)
    x = rng.random((1000, 20)).astype(np.float32)
    y = rng.integers(0, 2, 1000).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(96, drop_remainder=True)
    _show(ds)
    inputs = tb.keras_inputs(ds)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    _train(model, tb.to_dataset(ds), "binary_crossentropy")
    _caught(
        "the batch axis is None although drop_remainder=True made it a static 96 in element_spec; "
        "a model built from that static shape rejects any other batch size at inference",
        "no batch was taken by hand and nothing was read off .shape[1:]",
    )


def padded_sequences() -> None:
    import keras
    import tensorflow as tf

    import tfbridge as tb

    _section("2. Padded int sequences -> Masking + LSTM")
    rng = np.random.default_rng(_RNG_SEED)
    lengths = rng.integers(5, 50, 200)
    seqs = [rng.integers(1, 10, n) for n in lengths]
    labels = rng.integers(0, 2, 200)

    def examples() -> Any:
        yield from zip(seqs, labels, strict=True)

    ds = tf.data.Dataset.from_generator(
        examples,
        output_signature=(tf.TensorSpec((None,), tf.int64), tf.TensorSpec((), tf.int64)),
    )
    batches = tb.pad_batch(ds, 20, buckets=4)  # padded per batch, bucketed by length
    _show(batches)
    tokens = tb.keras_inputs(batches)
    features = keras.layers.Lambda(lambda t: keras.ops.expand_dims(keras.ops.cast(t, "float32"), -1))(tokens)
    masked = keras.layers.Masking(mask_value=0.0)(features)
    model = keras.Model(tokens, keras.layers.Dense(1, activation="sigmoid")(keras.layers.LSTM(8)(masked)))
    _train(model, tb.to_dataset(batches), "binary_crossentropy")
    _caught(
        "the time axis is None: batches are padded to their own longest sequence, so a fixed (50,) from "
        "one batch would reject the others",
        "the recipe feeds a 2-D (batch, 50) tensor straight into Masking + LSTM, which needs a feature "
        "axis (batch, time, features); here the model adds it explicitly",
        "bucketing by length cut padding: each batch holds sequences of one length bucket",
    )


def images() -> None:
    import keras

    import tfbridge as tb

    _section("3. Images from a generator function (float64 from numpy)")
    rng = np.random.default_rng(_RNG_SEED)

    def batches() -> Any:
        for n in (16, 16, 16, 16, 8):  # 72 images: a short last batch, which also shows these are batches
            yield rng.random((n, 64, 64, 3)), rng.integers(0, 2, n)

    _show(batches)
    inputs = tb.keras_inputs(batches)
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(h))
    ds = tb.to_dataset(batches)
    print(f"to_dataset element_spec: {ds.element_spec}")
    _train(model, ds, "binary_crossentropy")
    _caught(
        "np.random.rand gives float64: the data is float64 and the spec says so, but to_dataset and "
        "keras_inputs deliver keras.config.floatx() (float32), halving memory and matching the model",
    )


class _Float64Sequence:
    """The recipe's KerasGenerator: 100 samples, batch 32 -> a short last batch of 4; float64 features."""

    def __init__(self) -> None:
        import keras

        class Seq(keras.utils.PyDataset):  # type: ignore[misc]  # keras is untyped
            def __init__(self) -> None:
                super().__init__()
                rng = np.random.default_rng(_RNG_SEED)
                self.x, self.y = rng.random((100, 32)), rng.integers(0, 2, 100)
                self.epochs_ended = 0

            def __len__(self) -> int:
                return int(np.ceil(len(self.x) / 32))

            def __getitem__(self, i: int) -> Any:
                return self.x[i * 32 : (i + 1) * 32], self.y[i * 32 : (i + 1) * 32]

            def on_epoch_end(self) -> None:
                self.epochs_ended += 1

        self.seq = Seq()


def float64_sequence() -> None:
    import keras

    import tfbridge as tb

    _section("4. A keras PyDataset of float64 batches with a short last batch")
    seq = _Float64Sequence().seq
    _show(seq)
    print(tb.inspect(seq))
    inputs = tb.keras_inputs(seq)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(tb.to_dataset(seq, workers=2, executor="thread"), epochs=2, verbose=0)
    print(f"trained two epochs; on_epoch_end was called {seq.epochs_ended} times")
    _caught(
        "spread peeking read the last batch too: its 4 rows show in the report and the batch axis is None",
        "float64 batches are delivered as float32; the hand signature declared float64",
        "on_epoch_end ran after every epoch; wrapped in from_generator by hand it is never called",
    )


def variable_length_examples() -> None:
    import keras

    import tfbridge as tb

    _section("5. A Sequence of single variable-length examples, padded into batches")

    class VariableLength:
        def __len__(self) -> int:
            return 64

        def __getitem__(self, i: int) -> Any:
            rng = np.random.default_rng(i)  # deterministic per index: the same data every epoch
            return rng.random((int(rng.integers(10, 20)), 10)), int(rng.integers(0, 2))

    source = VariableLength()
    _show(source, batched=False)
    batches = tb.pad_batch(source, 16)
    print(f"pad_batch element_spec: {batches.element_spec}")
    inputs = tb.keras_inputs(batches)
    masked = keras.layers.Masking(mask_value=0.0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.LSTM(8)(masked)))
    _train(model, batches, "binary_crossentropy")
    _caught(
        "each __getitem__ returns one example, not a batch: batched=False says so and pad_batch pads "
        "each batch of 16 to its own longest sequence (the recipe declared float64 and int64 by hand)",
        "the label is a Python int: the spec makes it int64, the features float64 -> float32",
    )


SCENARIOS: list[Callable[[], None]] = [
    dense_features,
    padded_sequences,
    images,
    float64_sequence,
    variable_length_examples,
]


def run() -> None:
    import warnings

    import keras

    keras.utils.set_random_seed(_RNG_SEED)
    with warnings.catch_warnings():
        # Keras's notes on tf.data input (shuffle is the dataset's job; unknown length found at epoch end)
        warnings.filterwarnings("ignore", message=".*shuffle=True. was passed.*")
        warnings.filterwarnings("ignore", message=".*input ran out of data.*")
        for scenario in SCENARIOS:
            scenario()
    print("\nAll scenarios ran to the end.")
