"""pad_batch with buckets over a Python source: batches made where the elements are (one padded batch per step into
tf.data), the same batches tf.data's own ``bucket_by_sequence_length`` makes, and an iterator over them that a
checkpoint restores exactly, elements waiting in partial buckets included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb
from tfbridge.sources import _positions

_LENGTHS = np.random.default_rng(3).integers(1, 30, 300)
_BOUNDS = [6, 12, 20]


class Tokens:
    """Example i: int32 ids of length _LENGTHS[i] (the values say which example they came from), and i."""

    def __len__(self) -> int:
        return len(_LENGTHS)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int32]:
        return (np.arange(_LENGTHS[i]) + 1000 * i).astype(np.int32), np.int32(i)


class Words:
    """Dict examples with a text field and an int field of the same variable length."""

    def __len__(self) -> int:
        return 60

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = int(_LENGTHS[i])
        return {"words": [f"w{i}"] * n, "ids": np.full(n, i, np.int64), "id": np.int64(i)}


def _reference(make: Any, count: int, drop_remainder: bool) -> list[Any]:
    """tf.data's own buckets over the same examples, in order."""
    rows = [make(i) for i in range(count)]
    signature = tf.nest.map_structure(
        lambda v: tf.TensorSpec([None] * np.ndim(v), tf.as_dtype(np.asarray(v).dtype)), rows[0]
    )
    ds = tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=signature)
    first = tf.nest.flatten(signature)[0]
    assert first.shape.rank == 1

    def length(*element: Any) -> Any:
        return tf.shape(tf.nest.flatten(element)[0])[0]

    bucketed = ds.bucket_by_sequence_length(length, _BOUNDS, [8] * 4, drop_remainder=drop_remainder)
    return list(bucketed.as_numpy_iterator())


def _flat(batch: Any) -> list[Any]:
    return [np.asarray(v) for v in tf.nest.flatten(batch)]


def _same(got: list[Any], want: list[Any]) -> None:
    """The same batches: the full ones in the same order, the partial ones (the end of the pass) as a set."""
    assert len(got) == len(want)

    def key(batch: Any) -> list[int]:  # the example ids of a batch
        return _flat(batch)[-1].tolist()

    full_got = [key(b) for b in got if len(key(b)) == 8]
    full_want = [key(b) for b in want if len(key(b)) == 8]
    assert full_got == full_want
    by_key = {str(key(b)): b for b in want}
    for batch in got:
        other = by_key[str(key(batch))]
        for a, b in zip(_flat(batch), _flat(other), strict=True):
            assert a.shape == b.shape
            np.testing.assert_array_equal(a, b)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("executor", ["serial", "process"])
@pytest.mark.parametrize("drop_remainder", [False, True])
def test_bucketed_batches_are_those_tf_data_makes(executor: str, drop_remainder: bool) -> None:
    ds = tb.pad_batch(Tokens(), 8, buckets=_BOUNDS, executor=executor, drop_remainder=drop_remainder)
    assert _positions.passes_in(ds), "bucketed where the elements are made"
    assert ds.element_spec[0].shape.as_list() == [8 if drop_remainder else None, None]
    got = list(ds.as_numpy_iterator())
    _same(got, _reference(Tokens().__getitem__, len(Tokens()), drop_remainder))
    for ids, _ in got:  # one bucket per batch, padded to its longest
        lengths = (ids % 1000 != 0).sum(axis=1) + 1  # each row starts at a multiple of 1000, then counts up
        assert len({int(np.searchsorted(_BOUNDS, n, side="right")) for n in lengths}) == 1
        assert lengths.max() == ids.shape[1]
    assert got == [] or len(list(ds.as_numpy_iterator())) == len(got)  # a second epoch, whole


def test_text_and_dict_examples_are_padded_per_field_with_their_pad_values() -> None:
    ds = tb.pad_batch(Words(), 8, buckets=_BOUNDS, pad_value={"words": "<pad>", "ids": -1, "id": 0}, executor="serial")
    got = list(ds.as_numpy_iterator())
    seen = sorted(int(i) for b in got for i in b["id"])
    assert seen == list(range(60))
    for batch in got:
        for row, words, i in zip(batch["ids"], batch["words"], batch["id"], strict=True):
            n = int(_LENGTHS[int(i)])
            assert row[:n].tolist() == [i] * n and (row[n:] == -1).all()
            assert words[:n].tolist() == [f"w{i}".encode()] * n and words[n:].tolist() == [b"<pad>"] * (len(row) - n)


def test_a_generator_function_is_bucketed_the_same_way() -> None:
    def examples() -> Any:
        for i in range(len(_LENGTHS)):
            yield Tokens()[i]

    ds = tb.pad_batch(examples, 8, buckets=_BOUNDS)
    assert _positions.passes_in(ds)
    _same(list(ds.as_numpy_iterator()), _reference(Tokens().__getitem__, len(Tokens()), False))


def test_a_number_of_buckets_tells_keras_the_batch_count_and_shuffled_epochs_differ() -> None:
    ds = tb.pad_batch(tb.to_dataset(Tokens(), shuffle=True, seed=5), 8, buckets=3)
    assert _positions.passes_in(ds)
    epochs = [[int(i) for _, ids in ds.as_numpy_iterator() for i in ids] for _ in range(2)]
    assert int(ds.cardinality()) == len(list(ds))
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(len(_LENGTHS)))
    assert epochs[0] != epochs[1]


class Failing(Tokens):
    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int32]:
        if i == 100:
            raise ValueError("no example 100 here")
        return super().__getitem__(i)


def test_an_element_that_raises_ends_the_pass_after_every_batch_made_before_it() -> None:
    it = iter(tb.pad_batch(Failing(), 8, buckets=_BOUNDS, executor="serial"))
    seen: list[int] = []
    with pytest.raises(tf.errors.OpError, match=r"SourceError: element 100: ValueError: no example 100 here"):
        while True:
            seen += next(it)[1].numpy().tolist()
    assert sorted(seen) == list(range(100)), "the partial buckets went before the error"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("executor", ["serial", "thread"])
def test_a_restored_iterator_makes_the_batches_the_saved_one_would_have_made(executor: str, tmp_path: Path) -> None:
    ds = tb.pad_batch(tb.to_dataset(Tokens(), shuffle=True, seed=2, executor=executor), 8, buckets=_BOUNDS)
    it = iter(ds)
    for _ in range(7):
        next(it)
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "c"))
    rest = [(x.numpy().tolist(), i.numpy().tolist()) for x, i in it]
    waiting = {int(i) for _, ids in rest for i in ids}
    assert len(waiting) == len(_LENGTHS) - 56, "every element not yet delivered comes in the rest"
    again = iter(ds)
    tf.train.Checkpoint(iterator=again).read(path).assert_consumed()
    assert [(x.numpy().tolist(), i.numpy().tolist()) for x, i in again] == rest


def test_buckets_without_padding_are_refused_by_the_builder() -> None:
    from tfbridge.pipeline import build

    with pytest.raises(tb.TfBridgeError, match=r"buckets are for padded batches: pass batch_size and pad_value too"):
        build(Tokens(), batched=False, batch_size=8, buckets=[4], peek=1)
