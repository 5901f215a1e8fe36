"""Every error path of the public API: exception class, message and promised attributes."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from _checks import check_error, object_array
from _sources import Listed
from _sources import (
    Listed as Batches,  # ready-made batches, batched by the Keras convention
)

import tfbridge as tb


class Empty(keras.utils.PyDataset):
    def __init__(self) -> None:
        super().__init__()

    def __len__(self) -> int:
        return 0

    def __getitem__(self, index: int) -> Any:
        raise IndexError(index)


class RaisesAt17(Batches):
    def __getitem__(self, index: int) -> Any:
        if index == 17:
            raise ValueError("corrupt record 17")
        return self.items[index]


def _batch(width: int = 3, rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    return np.ones((rows, width), np.float32), np.zeros((rows,), np.int64)


def _batches(n: int = 6, *, wide_at: int | None = None) -> Batches:
    return Batches([_batch(4 if i == wide_at else 3) for i in range(n)])


_SPEC = tb.Spec.from_signature(
    (tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None,), tf.int64)), batched=True
)


def _gen_raising_at_fifth() -> Iterator[Any]:
    for i in range(10):
        if i == 4:
            raise ValueError("generator broke at its 5th element")
        yield _batch()


def _empty_gen() -> Iterator[Any]:
    yield from ()


def _iterate(ds: Any) -> None:
    for _ in ds:
        pass


# ---- the exception tree --------------------------------------------------------------------------------


_ERROR_NAMES = [name for name in tb.__all__ if name.endswith("Error") and name != "TfBridgeError"]


def test_the_error_classes_are_the_expected_ones() -> None:
    expected = [
        "ElementTimeoutError",
        "NonFiniteError",
        "SourceError",
        "SpecInferenceError",
        "SpecMismatchError",
        "WorkerDiedError",
    ]
    assert sorted(_ERROR_NAMES) == expected
    assert issubclass(tb.NonFiniteError, tb.SpecMismatchError)


@pytest.mark.parametrize("name", _ERROR_NAMES)
def test_every_error_class_subclasses_tfbridge_error(name: str) -> None:
    assert issubclass(getattr(tb, name), tb.TfBridgeError)
    assert issubclass(tb.TfBridgeError, Exception)


def test_source_error_survives_pickle_with_index_and_traceback() -> None:
    with pytest.raises(tb.SourceError) as info:
        tb.validate(RaisesAt17([_batch()] * 20), _SPEC)

    copy = pickle.loads(pickle.dumps(info.value))

    assert type(copy) is tb.SourceError
    assert str(copy) == str(info.value)
    assert copy.index == 17
    assert copy.traceback == info.value.traceback and "corrupt record 17" in copy.traceback


def test_spec_mismatch_error_survives_pickle_with_index_path_expected_got() -> None:
    with pytest.raises(tb.SpecMismatchError) as info:
        tb.validate(_batches(wide_at=4), _SPEC)

    copy = pickle.loads(pickle.dumps(info.value))

    assert type(copy) is tb.SpecMismatchError
    assert str(copy) == str(info.value)
    assert (copy.index, copy.path, copy.expected, copy.got) == (4, "x", "shape (None, 3)", "shape (2, 4)")


def test_worker_died_error_survives_pickle_with_index() -> None:
    err = tb.WorkerDiedError("worker 3 died (SIGKILL) while producing element 41", index=41)

    copy = pickle.loads(pickle.dumps(err))

    assert type(copy) is tb.WorkerDiedError
    assert str(copy) == "worker 3 died (SIGKILL) while producing element 41"
    assert copy.index == 41


# ---- SpecInferenceError --------------------------------------------------------------------------------


def test_infer_tuple_length_disagreement_names_both_elements() -> None:
    source = Batches([_batch(), _batch(), (_batch()[0],)])

    with pytest.raises(tb.SpecInferenceError) as info:
        tb.infer_spec(source)

    assert str(info.value).startswith(
        "samples disagree in structure at x: element 0 has tuple of length 2, element 2 has tuple of length 1."
    )
    assert "Hint:" in str(info.value)


def test_infer_generator_tuple_length_disagreement_names_both_elements() -> None:
    def gen() -> Iterator[Any]:
        yield _batch()
        yield (_batch()[0],)

    with pytest.raises(tb.SpecInferenceError) as info:
        tb.infer_spec(gen)

    assert "element 0 has tuple of length 2, element 1 has tuple of length 1" in str(info.value)


def test_infer_dict_keys_disagreement_names_path_keys_and_both_elements() -> None:
    x, y = _batch()
    source = Batches([({"tokens": x, "mask": x}, y), ({"tokens": x, "mask": x}, y), ({"tokens": x}, y)])

    with pytest.raises(tb.SpecInferenceError) as info:
        tb.infer_spec(source)

    assert str(info.value).startswith(
        "samples disagree in structure at x: element 0 has dict with keys ['mask', 'tokens'], "
        "element 2 has dict with keys ['tokens']."
    )


def test_infer_rank_disagreement_names_nested_path_shapes_and_both_elements() -> None:
    y = np.zeros((2,), np.int64)
    source = Batches([({"tokens": np.ones((2, 3), np.int32)}, y), ({"tokens": np.ones((2, 3, 1), np.int32)}, y)])

    with pytest.raises(tb.SpecInferenceError) as info:
        tb.infer_spec(source)

    assert str(info.value).startswith(
        "samples disagree in rank at x['tokens']: element 0 has shape (2, 3) (rank 2), "
        "element 1 has shape (2, 3, 1) (rank 3)."
    )


def test_infer_dtype_disagreement_names_path_dtypes_and_both_elements() -> None:
    x = np.ones((2, 3), np.float32)
    source = Batches([(x, np.zeros(2, np.int64)), (x, np.zeros(2, np.int64)), (x, np.zeros(2, np.int32))])

    with pytest.raises(tb.SpecInferenceError) as info:
        tb.infer_spec(source)

    assert str(info.value).startswith("samples disagree in dtype at y: element 0 is int64, element 2 is int32.")
    assert "spec=" in str(info.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param([], "the source builtins.list is empty", id="empty-list"),
        pytest.param(_empty_gen, "the source _empty_gen is empty", id="empty-generator-function"),
        pytest.param(Empty(), "is empty (len 0)", id="zero-length-pydataset"),
    ],
)
def test_infer_empty_source_raises_spec_inference_error(source: Any, message: str) -> None:
    with pytest.raises(tb.SpecInferenceError) as info:
        tb.infer_spec(source)

    assert message in str(info.value)
    assert "no element to infer a spec from" in str(info.value)


def test_a_tf_data_dataset_known_to_be_empty_raises_spec_inference_error_everywhere() -> None:
    import tensorflow as tf

    message = r"the source tf\.data\.Dataset \(\w+\) is empty: its cardinality is 0, so there is no element"
    empty = (tf.data.Dataset.range(0).batch(2), tf.data.Dataset.from_tensor_slices(np.zeros((0, 3))))
    for ds in (*empty, tf.data.Dataset.range(5).take(0)):
        for call in (tb.infer_spec, tb.keras_inputs, tb.to_dataset, tb.validate):
            with pytest.raises(tb.SpecInferenceError, match=message):
                call(ds)


def test_reading_every_element_of_an_infinite_tf_data_dataset_is_refused_not_endless() -> None:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(np.zeros((10, 3), np.float32)).batch(4).repeat()
    message = r"is infinite \(it repeats\): reading every element of it would never end\.\nHint: pass the pipeline"
    with pytest.raises(tb.TfBridgeError, match=message):
        tb.validate(ds)
    with pytest.raises(tb.TfBridgeError, match=message):
        tb.inspect(ds, full=True)
    with pytest.raises(tb.TfBridgeError, match=message):
        tb.to_dataset(ds, validate="all")
    with pytest.raises(tb.TfBridgeError, match=r"adapt_normalization's pass over all of it would never end"):
        tb.adapt_normalization(ds)
    assert tb.validate(ds, limit=7) == 7, "a limit makes it finite"
    assert "TensorSpec" in str(tb.inspect(ds).spec.signature), "a peek reads only a few"


def test_to_dataset_of_empty_generator_raises_spec_inference_error() -> None:
    with pytest.raises(tb.SpecInferenceError, match=r"the source _empty_gen is empty: calling _empty_gen\(\) gave"):
        tb.to_dataset(_empty_gen)


class _EmptyIterable:
    def __iter__(self) -> Iterator[Any]:
        return iter(())


def _used_up() -> Iterator[Any]:
    it = iter([_batch()])
    next(it)
    return it


_ONCE = "an iterator gives its elements only once"
_EMPTY_KINDS = [
    pytest.param(
        [],
        "the source builtins.list is empty (len 0): there is no element to infer a spec from.\n"
        "Hint: the list holds no elements: check the code that loads or fills it.",
        id="list",
    ),
    pytest.param(
        Empty(),
        "the source test_errors.Empty is empty (len 0): there is no element to infer a spec from.\n"
        "Hint: its __len__ returned 0: check the data it loads.",
        id="zero-length-pydataset",
    ),
    pytest.param(
        (np.zeros((0, 3)), np.zeros((0,))),
        "the arrays of the source are empty (0 rows): there is no element to infer a spec from.\n"
        "Hint: they hold no rows: check the code that loads them (a filter or an empty file leaves none).",
        id="arrays",
    ),
    pytest.param(
        _empty_gen,
        "the source _empty_gen is empty: calling _empty_gen() gave a generator that yielded nothing, so there is "
        "no element to infer a spec from.\nHint: check the data the generator function reads and the conditions of "
        "its loop.",
        id="generator-function",
    ),
    pytest.param(
        lambda: [],
        "the source <lambda> is empty: <lambda>() returned an empty iterable, so there is no element to infer a "
        "spec from.\nHint: check the data it loads.",
        id="function-returning-an-empty-list",
    ),
    pytest.param(
        _EmptyIterable(),
        "the source test_errors._EmptyIterable is empty: iterating it gave no element, so there is no element to "
        "infer a spec from.\nHint: check the data it holds or loads.",
        id="re-iterable",
    ),
    pytest.param(
        _used_up(),
        "the source builtins.list_iterator is empty: the iterator gave no element, so there is no element to infer "
        f"a spec from.\nHint: {_ONCE}, so one that was read before (by a loop, list() or a dataset made from it) is "
        "used up; pass a generator function or a re-iterable such as a list to read the data more than once.",
        id="used-up-iterator",
    ),
    pytest.param(
        _empty_gen(),
        "the source builtins.generator is empty: the iterator gave no element, so there is no element to infer "
        f"a spec from.\nHint: {_ONCE}, so one that",
        id="generator-object",
    ),
    pytest.param(
        tf.data.Dataset.range(3).filter(lambda x: x > 5).map(lambda x: tf.py_function(lambda v: v, [x], tf.int64)),
        "the source tf.data.Dataset (MapDataset) is empty: the dataset gave no element, so there is no element to "
        "infer a spec from.\nHint: check the pipeline's input, and its filter, take, skip or shard steps.",
        id="tf-data-of-unknown-rank",
    ),
]


@pytest.mark.parametrize(("source", "message"), _EMPTY_KINDS)
def test_an_empty_source_has_the_hint_of_its_kind(source: Any, message: str) -> None:
    """Only a one-shot iterator is told that its elements come once; a list, a generator function or a
    re-iterable is simply empty."""
    with pytest.raises(tb.SpecInferenceError) as info:
        tb.infer_spec(source)

    assert str(info.value).startswith(message)
    assert (_ONCE in str(info.value)) == isinstance(source, Iterator)


def test_infer_batched_source_with_scalar_field_names_element_and_path() -> None:
    source = Batches([(np.ones((2, 3), np.float32), 1.0)])
    assert not tb.infer_spec(source).batched  # by itself a scalar field means examples

    with pytest.raises(tb.SpecInferenceError) as info:
        tb.infer_spec(source, batched=True)

    assert str(info.value).startswith(
        "element 0 at y: a batched source needs a batch axis on every field, but this field is a scalar. "
        "Received: 1.0"
    )
    assert "batched=False" in str(info.value)


def test_infer_batch_whose_fields_have_different_batch_sizes_names_element_and_fields() -> None:
    source = Batches([_batch(), (np.ones((2, 3), np.float32), np.zeros((3,), np.int64))])

    with pytest.raises(tb.SpecInferenceError) as info:
        tb.infer_spec(source, batched=True)

    assert str(info.value).startswith(
        "element 1: the fields of one batch have different batch sizes (x: 2, y: 3)."
    )


@pytest.mark.parametrize(
    ("element", "message"),
    [
        pytest.param((), r"^element 0 at x: holds no tensor, only empty tuples", id="no-tensor-at-all"),
        pytest.param(2**63, r"^element 0 at x: a Python int of 64 bits does not fit int64", id="int-beyond-int64"),
        pytest.param([2**63, -1], r"^element 0 at x: a Python int of 64 bits does not fit int64", id="list-to-float64"),
        pytest.param([2**70], r"^element 0 at x: a Python int of 71 bits does not fit int64", id="list-to-object"),
        pytest.param(object_array([2**70]), r"a Python int of 71 bits does not fit int64", id="object-array-int"),
        pytest.param([["a"], [1, 2]], r"^element 0 at x: a list mixing strings and numbers", id="ragged-text-and-ints"),
        pytest.param([["a", 1]], r"^element 0 at x: a list mixing strings and numbers", id="nested-text-and-ints"),
        pytest.param([False, []], r"^element 0 at x: nested lists of unequal depth", id="scalar-before-list"),
        pytest.param(
            object_array([[None], [1, 2]]), r"a builtins.NoneType inside a list or object array", id="object-none"
        ),
        pytest.param(
            {1: np.zeros(2), "a": np.zeros(2)}, r"^the dict at x has keys of types that do not sort", id="mixed-keys"
        ),
    ],
)
def test_values_without_a_tensorflow_dtype_raise_spec_inference_error_naming_the_field(
    element: Any, message: str
) -> None:
    """Each once escaped as a raw ValueError/TypeError/OverflowError or became strings (found by fuzzing)."""
    with pytest.raises(tb.SpecInferenceError, match=message) as info:
        tb.to_dataset(Listed([element]), batched=False, executor="serial")
    check_error(info.value)
    assert info.value.path == "x"


def test_a_column_of_dates_is_named_with_a_hint() -> None:
    dates = {"when": np.arange(3).astype("datetime64[D]"), "y": np.zeros(3)}
    with pytest.raises(tb.SpecInferenceError) as info:
        tb.infer_spec(dates)
    assert str(info.value) == (
        "column x['when']: dtype datetime64[D] has no TensorFlow equivalent.\n"
        "Hint: convert such columns (e.g. dates) to numbers or strings first."
    )
    assert info.value.path == "x['when']"


# ---- SpecMismatchError from validate --------------------------------------------------------------------


def test_validate_wider_element_reports_index_path_expected_got() -> None:
    with pytest.raises(tb.SpecMismatchError) as info:
        tb.validate(_batches(wide_at=4), _SPEC)

    err = info.value
    assert (err.index, err.path, err.expected, err.got) == (4, "x", "shape (None, 3)", "shape (2, 4)")
    assert str(err).startswith("element 4 at x: expected shape (None, 3), got shape (2, 4).")


def test_validate_returns_the_number_of_elements_checked_when_all_fit() -> None:
    assert tb.validate(_batches(), _SPEC) == 6
    assert tb.validate(_batches(wide_at=4), _SPEC, limit=4) == 4


def test_validate_float_into_int_spec_is_a_mismatch_not_a_conversion() -> None:
    int_spec = tb.Spec.from_signature(
        (tf.TensorSpec((None, 3), tf.int32), tf.TensorSpec((None,), tf.int64)), batched=True
    )

    with pytest.raises(tb.SpecMismatchError) as info:
        tb.validate(_batches(), int_spec)

    err = info.value
    assert (err.index, err.path, err.expected, err.got) == (0, "x", "dtype int32", "dtype float32")
    assert "converting float32 to int32 would lose information" in str(err)


def test_validate_integer_out_of_int8_range_is_an_error_not_a_wrap() -> None:
    items = [_batch() for _ in range(5)]
    items[2] = (items[2][0], np.array([5, 300], np.int64))
    int8_spec = tb.Spec.from_signature(
        (tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None,), tf.int8)), batched=True
    )

    with pytest.raises(tb.SpecMismatchError) as info:
        tb.validate(Batches(items), int8_spec)

    err = info.value
    assert (err.index, err.path) == (2, "y")
    assert err.expected == "dtype int8 (range -128..127)"
    assert err.got == "int64 values from 5 to 300"


def test_to_dataset_with_int8_spec_refuses_out_of_range_peeked_values() -> None:
    items = [_batch() for _ in range(5)]
    items[4] = (items[4][0], np.array([-129, 0], np.int64))
    int8_spec = tb.Spec.from_signature(
        (tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None,), tf.int8)), batched=True
    )

    with pytest.raises(tb.SpecMismatchError, match=r"^element 4 at y: expected dtype int8 \(range -128\.\.127\)"):
        tb.to_dataset(Batches(items), spec=int8_spec)


def test_validate_tuple_length_change_reports_index_expected_got() -> None:
    items = [_batch() for _ in range(5)]
    items[3] = (items[3][0],)

    with pytest.raises(tb.SpecMismatchError) as info:
        tb.validate(Batches(items), _SPEC)

    err = info.value
    assert (err.index, err.expected, err.got) == (3, "tuple of length 2", "tuple of length 1")
    assert str(err).startswith("element 3 at ")


def test_validate_dict_key_change_reports_index_path_expected_got() -> None:
    x, y = _batch()
    items = [({"tokens": x, "mask": x}, y) for _ in range(5)]
    spec = tb.infer_spec(Batches(items))
    items[3] = ({"tokens": x}, y)

    with pytest.raises(tb.SpecMismatchError) as info:
        tb.validate(Batches(items), spec)

    err = info.value
    assert (err.index, err.path) == (3, "x")
    assert err.expected == "dict with keys ['mask', 'tokens']"
    assert err.got == "dict with keys ['tokens']"


def test_validate_rank_change_in_nested_field_reports_its_path() -> None:
    y = np.zeros((2,), np.int64)
    items = [({"tokens": np.ones((2, 3), np.int32)}, y) for _ in range(5)]
    spec = tb.infer_spec(Batches(items))
    items[2] = ({"tokens": np.ones((2, 3, 1), np.int32)}, y)

    with pytest.raises(tb.SpecMismatchError) as info:
        tb.validate(Batches(items), spec)

    err = info.value
    assert (err.index, err.path) == (2, "x['tokens']")
    assert (err.expected, err.got) == ("shape (None, 3) (rank 2)", "shape (2, 3, 1) (rank 3)")


# ---- errors while iterating a dataset ------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["serial", "thread"])
def test_spec_mismatch_while_iterating_surfaces_as_op_error_naming_class_and_index(executor: str) -> None:
    ds = tb.to_dataset(_batches(20, wide_at=13), spec=_SPEC, executor=executor)

    with pytest.raises(tf.errors.OpError) as info:
        _iterate(ds)

    message = str(info.value)
    assert "SpecMismatchError: element 13 at x: expected shape (None, 3), got shape (2, 4)." in message


@pytest.mark.parametrize("executor", ["serial", "thread"])
def test_source_error_inside_tf_data_says_its_traceback_is_below_and_it_is(executor: str) -> None:
    """TensorFlow's op error carries tfbridge's message first and the original traceback after it."""
    ds = tb.to_dataset(RaisesAt17([_batch()] * 24), executor=executor, peek=2)

    with pytest.raises(tf.errors.OpError) as info:
        _iterate(ds)

    message = info.value.message
    hint = "Hint: the source's own code raised this (traceback below)."
    assert (
        f"SourceError: element 17: ValueError: corrupt record 17\n{hint}\nTraceback (most recent call last):"
        in message
    )
    assert "traceback above" not in message
    user_frame = message.index(", in __getitem__\n")
    assert message.index(hint) < user_frame < message.index("ValueError: corrupt record 17\n", user_frame)


# ---- SourceError before iterating ---------------------------------------------------------------------


def test_source_error_raised_directly_says_its_traceback_is_above_and_it_is() -> None:
    """Raised in the caller's own process, the original is chained: Python prints its traceback first."""
    import traceback

    with pytest.raises(tb.SourceError) as info:
        tb.to_dataset(RaisesAt17([_batch()] * 30))  # the spread peek reads element 17

    assert str(info.value) == (
        "element 17: ValueError: corrupt record 17\nHint: the source's own code raised this (traceback above)."
    )
    printed = "".join(traceback.format_exception(info.value))
    assert printed.index(", in __getitem__\n") < printed.index("(traceback above)")


def test_validate_source_error_carries_index_and_original_traceback() -> None:
    with pytest.raises(tb.SourceError) as info:
        tb.validate(RaisesAt17([_batch()] * 24), _SPEC)

    err = info.value
    assert err.index == 17
    assert str(err).startswith("element 17: ValueError: corrupt record 17")
    assert "ValueError: corrupt record 17" in err.traceback
    assert "__getitem__" in err.traceback
    assert isinstance(err.__cause__, ValueError)


def test_validate_generator_function_source_error_carries_index_and_traceback() -> None:
    with pytest.raises(tb.SourceError) as info:
        tb.validate(_gen_raising_at_fifth, _SPEC)

    err = info.value
    assert err.index == 4
    assert str(err).startswith("element 4: ValueError: generator broke at its 5th element")
    assert "generator broke at its 5th element" in err.traceback


def test_to_dataset_peek_hitting_a_raising_element_raises_source_error_directly() -> None:
    with pytest.raises(tb.SourceError, match=r"^element 17: ValueError: corrupt record 17") as info:
        tb.to_dataset(RaisesAt17([_batch()] * 30))  # spread peek of 30 elements visits index 17

    assert info.value.index == 17


# ---- bad arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"executor": "thread", "workers": 0},
            "workers must be a positive int or None. Received: 0",
            id="workers-thread",
        ),
        pytest.param(
            {"executor": "serial", "workers": 0},
            "workers must be a positive int or None. Received: 0",
            id="workers-serial",
        ),
        pytest.param(
            {"workers": 0},
            "workers must be a positive int or None. Received: 0",
            id="workers-auto",
        ),
        pytest.param(
            {"cast_floats": "int8"},
            'cast_floats must be "floatx", None or a float dtype name. Received: \'int8\'',
            id="cast_floats",
        ),
        pytest.param(
            {"validate": "sometimes"},
            "validate must be one of 'peek', 'all', 'none'. Received: 'sometimes'",
            id="validate",
        ),
        pytest.param({"peek": 0}, "peek must be a positive int. Received: 0", id="peek"),
        pytest.param(
            {"batched": "yes"}, "batched must be True, False or None. Received: 'yes'", id="batched"
        ),
    ],
)
def test_to_dataset_bad_argument_names_it_and_what_was_received(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(tb.TfBridgeError) as info:
        tb.to_dataset(_batches(), **kwargs)

    assert type(info.value) is tb.TfBridgeError
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(_batches(), id="indexed"),
        pytest.param(np.zeros((4, 2)), id="arrays"),
        pytest.param(tf.data.Dataset.range(3), id="tf.data"),
        pytest.param(_gen_raising_at_fifth, id="generator-function"),
    ],
)
def test_unknown_executor_is_refused_naming_the_choices_for_every_kind_of_source(source: Any) -> None:
    with pytest.raises(tb.TfBridgeError) as info:
        tb.to_dataset(source, executor="bogus", peek=2)

    assert type(info.value) is tb.TfBridgeError
    assert str(info.value).startswith(
        "executor must be one of 'serial', 'thread', 'process', 'ray', 'auto'. Received: 'bogus'"
    )


def test_infer_spec_peek_zero_names_peek_and_what_was_received() -> None:
    with pytest.raises(tb.TfBridgeError, match=r"^peek must be at least 1\. Received: peek=0$"):
        tb.infer_spec(_batches(), peek=0)


def test_validate_negative_limit_names_limit_and_what_was_received() -> None:
    with pytest.raises(tb.TfBridgeError, match=r"^limit must be a non-negative int or None\. Received: -1$"):
        tb.validate(_batches(), _SPEC, limit=-1)


def test_to_dataset_batch_size_zero_names_it_and_what_was_received() -> None:
    examples = (np.ones((10, 3), np.float32), np.zeros((10,), np.int64))

    with pytest.raises(tb.TfBridgeError, match=r"^batch_size must be a positive int or None\. Received: 0$"):
        tb.to_dataset(examples, batch_size=0)


def test_to_dataset_shuffle_of_a_generator_function_points_to_dataset_shuffle() -> None:
    with pytest.raises(tb.TfBridgeError) as info:
        tb.to_dataset(_gen_raising_at_fifth, shuffle=True, peek=2)

    message = str(info.value)
    assert message.startswith("shuffle=True needs random access, but the source _gen_raising_at_fifth is a stream")
    assert "dataset.shuffle(buffer_size)" in message


def test_to_dataset_batch_size_on_an_already_batched_source_is_refused() -> None:
    with pytest.raises(tb.TfBridgeError) as info:
        tb.to_dataset(_batches(), batch_size=4)

    message = str(info.value)
    assert message.startswith("batch_size is for sources of single examples, but ")
    assert "is taken as batched (each element is already a batch)" in message
    assert "batched=False" in message


def test_to_dataset_batch_size_on_examples_of_varying_length_points_to_pad_batch() -> None:
    def examples() -> Iterator[np.ndarray]:
        for n in (3, 5, 4):
            yield np.arange(n)

    with pytest.raises(tb.TfBridgeError) as info:
        tb.to_dataset(examples, batched=False, batch_size=2)

    message = str(info.value)
    assert message.startswith("batch_size cannot stack x: its shape (None,) varies between examples.")
    assert "tb.pad_batch(source, batch_size)" in message


def test_to_dataset_label_naming_a_missing_dataframe_column_lists_the_columns() -> None:
    df = pd.DataFrame({"a": [1.0, 2.0], "b": [1, 2]})

    with pytest.raises(tb.TfBridgeError) as info:
        tb.to_dataset(df, label="c")

    message = str(info.value)
    assert message.startswith("label column(s) ['c'] not found. The element has the columns ['a', 'b'].")
    assert "Received: label='c'" in message


@pytest.mark.parametrize(
    "source",
    [
        pytest.param((np.ones((10, 3), np.float32), np.zeros((10,), np.int64)), id="numpy-tuple"),
        pytest.param(_batches(), id="indexed-tuples"),
        pytest.param(
            tf.data.Dataset.from_tensor_slices((np.ones((10, 3), np.float32), np.zeros((10,), np.int64))).batch(4),
            id="tf-data-tuples",
        ),
    ],
)
def test_to_dataset_label_on_tuple_shaped_source_explains_the_keras_split(source: Any) -> None:
    with pytest.raises(tb.TfBridgeError) as info:
        tb.to_dataset(source, label="y")

    message = str(info.value)
    assert message.startswith(
        "label='y' needs elements that are dicts of columns, but an element is tuple of length 2."
    )
    assert "(x, y, sample_weight)" in message
    assert "in user code" not in message and "File " not in message, "no autograph frames around the message"


def test_label_naming_no_column_of_a_tf_data_dataset_lists_its_columns() -> None:
    ds = tf.data.Dataset.from_tensor_slices({"a": np.ones((6, 2)), "b": np.arange(6)}).batch(4)
    with pytest.raises(tb.TfBridgeError) as info:
        tb.to_dataset(ds, label="c")

    assert str(info.value).startswith("label column(s) ['c'] not found. The element has the columns ['a', 'b'].")


@pytest.mark.parametrize(
    ("obj", "received"),
    [pytest.param(42, "Received: 42", id="int"), pytest.param(None, "Received: None", id="None")],
)
@pytest.mark.parametrize("call", [tb.to_dataset, tb.infer_spec, tb.validate, tb.keras_inputs])
def test_non_source_is_refused_by_every_entry_point(obj: Any, received: str, call: Any) -> None:
    with pytest.raises(tb.TfBridgeError) as info:
        call(obj)

    message = str(info.value)
    assert message.startswith(f"{type(obj).__name__} is not a data source. {received}")
    assert "Hint:" in message


def test_non_source_with_non_iterable_shape_attribute_is_refused_with_tfbridge_error() -> None:
    with pytest.raises(tb.TfBridgeError, match=r"^module is not a data source\. Received: "):
        tb.to_dataset(np)


# ---- Spec.from_json on invalid and hostile input -------------------------------------------------------


def _spec_json(signature: Any, batched: Any = True) -> str:
    return json.dumps({"batched": batched, "signature": signature})


def _tensor(shape: Any = (None, 3), dtype: Any = "float32") -> dict[str, Any]:
    return {"type": "tensor", "shape": list(shape), "dtype": dtype}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("not json", r"^Spec\.from_json: not valid JSON", id="not-json"),
        pytest.param(b"\xff\xfe", r"^Spec\.from_json: not valid JSON", id="bad-bytes"),
        pytest.param(None, r"^Spec\.from_json: not valid JSON", id="None"),
        pytest.param("[1, 2]", r'exactly the keys "batched" and "signature"', id="a-list"),
        pytest.param(json.dumps({"signature": _tensor()}), r'exactly the keys "batched"', id="missing-key"),
        pytest.param(
            json.dumps({"batched": True, "signature": _tensor(), "pickle": "x"}),
            r'exactly the keys "batched"',
            id="extra-key",
        ),
        pytest.param(_spec_json(_tensor(), batched="yes"), r'"batched" must be true or false', id="batched"),
        pytest.param(_spec_json(_tensor(dtype="object")), r'"dtype" must be one of', id="dtype-object"),
        pytest.param(
            _spec_json(_tensor(dtype="__import__('os')")), r'"dtype" must be one of', id="dtype-code"
        ),
        pytest.param(_spec_json(_tensor(shape=[-1])), r'"shape" must be a list of non-negative', id="negative-dim"),
        pytest.param(_spec_json(_tensor(shape=[True])), r'"shape" must be a list of non-negative', id="bool-dim"),
        pytest.param(_spec_json(_tensor(shape=[2.5])), r'"shape" must be a list of non-negative', id="float-dim"),
        pytest.param(_spec_json({"type": "pickle", "shape": [], "dtype": "float32"}), r'"type" must be one of',
                     id="unknown-type"),
        pytest.param(_spec_json({"type": "tuple", "items": []}), r"nest of tfbridge Leaf objects", id="no-leaves"),
        pytest.param(
            _spec_json(_tensor(shape=[2**63])), r'"shape" must be a list of non-negative', id="dim-beyond-int64"
        ),
        pytest.param(
            _spec_json({"type": "ragged", "shape": [None, None], "dtype": "int32", "ragged_rank": 5}),
            r'"ragged_rank" must be an integer from 1 to rank - 1',
            id="ragged-rank",
        ),
        pytest.param(
            _spec_json({"type": "namedtuple", "name": "os.system('x')", "fields": ["a"], "items": [_tensor()]}),
            r'"name" must be a Python identifier',
            id="namedtuple-name-code",
        ),
        pytest.param(
            _spec_json({"type": "namedtuple", "name": "Pair", "fields": ["a", "_b"], "items": [_tensor(), _tensor()]}),
            r'"fields" must be distinct Python identifiers not starting with "_", one per item',
            id="namedtuple-private-field",
        ),
        pytest.param(
            _spec_json({"type": "namedtuple", "name": "Pair", "fields": ["a"], "items": [_tensor(), _tensor()]}),
            r'"fields" must be distinct Python identifiers',
            id="namedtuple-fields-count",
        ),
        pytest.param(
            _spec_json({"type": "namedtuple", "name": "Pair", "items": [_tensor()]}),
            r'a namedtuple needs exactly "type", "name", "fields" and "items"',
            id="namedtuple-no-fields",
        ),
        pytest.param(
            _spec_json(json.loads('{"type": "tuple", "items": [' * 100 + json.dumps(_tensor()) + "]}" * 100)),
            r"nesting deeper than 64",
            id="nesting-100",
        ),
    ],
)
def test_spec_from_json_rejects_invalid_input_with_tfbridge_error(text: Any, message: str) -> None:
    with pytest.raises(tb.TfBridgeError, match=message) as info:
        tb.Spec.from_json(text)

    assert type(info.value) is tb.TfBridgeError
    assert str(info.value).startswith("Spec.from_json: "), "every refusal says where it comes from"


def test_spec_from_json_rejects_10000_levels_of_nesting_with_tfbridge_error() -> None:
    deep = '{"batched": true, "signature": ' + '{"type": "tuple", "items": [' * 10_000 + "]}" * 10_000 + "}"

    with pytest.raises(tb.TfBridgeError, match=r"^Spec\.from_json: "):
        tb.Spec.from_json(deep)


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param({"type": ["tensor"], "shape": [], "dtype": "float32"}, id="list-type"),
        pytest.param(_tensor(dtype=["float32"]), id="list-dtype"),
        pytest.param(_tensor(dtype={"name": "float32"}), id="object-dtype"),
    ],
)
def test_spec_from_json_rejects_unhashable_type_or_dtype_with_tfbridge_error(signature: Any) -> None:
    with pytest.raises(tb.TfBridgeError, match=r"^Spec\.from_json: signature: "):
        tb.Spec.from_json(_spec_json(signature))


def test_tf_data_source_with_a_narrowing_spec_is_refused_not_wrapped() -> None:
    ds = tf.data.Dataset.from_tensor_slices(np.array([[1, 300, -200]], np.int64))
    spec = tb.Spec.from_signature(tf.TensorSpec((3,), tf.int8), batched=False)
    with pytest.raises(tb.SpecMismatchError, match="the dataset's x is int64 and the spec says int8") as info:
        tb.to_dataset(ds, spec=spec)
    assert info.value.expected == "int8" and info.value.got == "int64"
    floats = tf.data.Dataset.from_tensor_slices(np.array([[0.7, 2.9]]))
    with pytest.raises(tb.SpecMismatchError, match="float64 and the spec says int32"):
        tb.to_dataset(floats, spec=tb.Spec.from_signature(tf.TensorSpec((2,), tf.int32), batched=False))
    widened = tb.to_dataset(ds, spec=tb.Spec.from_signature(tf.TensorSpec((3,), tf.float64), batched=False))
    assert next(iter(widened)).numpy().tolist() == [1.0, 300.0, -200.0]


@pytest.mark.parametrize(
    ("dtype", "bad", "became"),
    [
        pytest.param(tf.float32, 16_777_217, "16777216.0", id="float32-past-2**24"),
        pytest.param(tf.float16, 70_000, "inf", id="float16-overflow"),
        pytest.param(tf.float16, 2049, "2048.0", id="float16-past-2048"),
        pytest.param(tf.bfloat16, 257, "256.0", id="bfloat16-past-256"),
        pytest.param(tf.float64, 2**53 + 1, "9007199254740992.0", id="float64-past-2**53"),
    ],
)
def test_integers_a_given_float_spec_cannot_hold_exactly_are_a_mismatch_not_rounded(
    dtype: Any, bad: int, became: str
) -> None:
    spec = tb.Spec.from_signature(tf.TensorSpec((None,), dtype), batched=True)
    items = [np.array([1, 2], np.int64), np.array([3, 4], np.int64), np.array([5, bad], np.int64)]

    with pytest.raises(tb.SpecMismatchError) as info:
        tb.validate(items, spec)

    err = info.value
    assert (err.index, err.path, err.expected) == (2, "x", f"dtype {dtype.name}")
    assert err.got == f"int64 value {bad}, which {dtype.name} holds as {became}"
    assert f"converting these integers to {dtype.name} would change them" in str(err)
    with pytest.raises(tb.SpecMismatchError, match=f"int64 value {bad}"):
        tb.to_dataset(items, spec=spec)  # the peek sees every one of three elements


def test_integers_that_a_given_float_spec_holds_exactly_convert() -> None:
    spec = tb.Spec.from_signature(tf.TensorSpec((None,), tf.float32), batched=True)
    items = [np.array([1, 2**24], np.int64), np.array([2**25, -(2**24)], np.int64), np.array([7], np.uint8)]

    assert tb.validate(items, spec) == 3  # 2**25 is not below 2**24 but float32 holds it exactly
    got = [b.tolist() for b in tb.to_dataset(items, spec=spec).as_numpy_iterator()]
    assert got == [[1.0, 16777216.0], [33554432.0, -16777216.0], [7.0]]


def test_a_tf_data_integer_a_given_float_spec_cannot_hold_is_an_assertion_naming_the_field_and_value() -> None:
    source = tf.data.Dataset.from_tensor_slices({"id": np.array([1, 2, 3, 16_777_217, 5], np.int64)}).batch(2)
    spec = {"id": tf.TensorSpec((None,), tf.float32)}
    ds = tb.to_dataset(source, spec=spec)
    assert ds.element_spec == spec
    got = []
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        for batch in ds:
            got.append(batch["id"].numpy().tolist())
    assert got == [[1.0, 2.0]], "the batches before it are delivered"
    text = str(info.value)
    assert "SpecMismatchError: an element at x[" in text and "id" in text  # TensorFlow escapes the quotes
    assert "int64 values that float32 cannot hold exactly" in text
    assert "[16777217]" in text
    fits = tf.data.Dataset.from_tensor_slices({"id": np.array([1, 16_777_216], np.int64)}).batch(2)
    assert next(iter(tb.to_dataset(fits, spec=spec)))["id"].numpy().tolist() == [1.0, 16777216.0]


def test_a_tf_data_element_that_breaks_a_given_spec_is_named_by_index_field_and_shapes() -> None:
    import tensorflow as tf

    source = tf.data.Dataset.range(6).map(lambda i: {"tok": tf.range(tf.where(i == 3, 4, 3), dtype=tf.int64), "y": i})
    spec = {"tok": tf.TensorSpec((3,), tf.int64), "y": tf.TensorSpec((), tf.int64)}
    ds = tb.to_dataset(source, spec=spec, batched=False)
    got = []
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        for element in ds:
            got.append(int(element["y"]))
    assert got == [0, 1, 2], "the elements before it are delivered"
    text = str(info.value)
    assert "SpecMismatchError: an element at x[" in text and "tok" in text
    assert "expected shape (3,), got shape] [4]" in text
    rank = tf.data.Dataset.range(4).map(
        lambda i: tf.py_function(lambda v: np.zeros((2, 3) if int(v) != 2 else (3,)), [i], tf.float64)
    )  # unknown rank: element 2 has one axis fewer than the spec
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected shape \(2, 3\), got shape\] \[3\]"):
        list(tb.to_dataset(rank, spec=tf.TensorSpec((2, 3), tf.float64), batched=False))
    from tfbridge.service import python_ops

    assert python_ops(ds) == [], "the check is an assertion in the graph: the dataset can still be distributed"


class _FailsAtFour:
    """100 examples; element 4 raises (the peek, at spread positions, does not read it)."""

    def __len__(self) -> int:
        return 100

    def __getitem__(self, i: int) -> Any:
        if i == 4:
            raise KeyError("missing key")
        return {"tok": np.arange(i % 7 + 1, dtype=np.float32), "y": i % 2}


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: tb.pad_batch(_FailsAtFour(), 4, buckets=3, label="y"), id="pad_batch-buckets-count"),
        pytest.param(
            lambda: tb.adapt_normalization(_FailsAtFour(), batched=False, path="tok", label="y", axis=None),
            id="adapt_normalization",
        ),
    ],
)
def test_a_source_error_in_a_pass_made_before_returning_is_raised_as_the_source_error(call: Any) -> None:
    """pad_batch(buckets=<int>) reads every length and adapt_normalization every value before they return: an
    element that raises there is the SourceError itself (as for validate and materialize), not TensorFlow's op
    error around it."""
    with pytest.raises(tb.SourceError) as info:
        call()
    err = info.value
    assert err.index == 4
    assert str(err).startswith("element 4: KeyError: 'missing key'")
    assert str(err).endswith("Hint: the source's own code raised this (traceback above).")
    assert isinstance(err.__cause__, KeyError)
    assert "raise KeyError" in (err.traceback or "")


@pytest.mark.parametrize(
    ("dtype", "value", "got"),
    [
        pytest.param(tf.uint8, -1, "int64 values from -1 to 3", id="int-wrap"),
        pytest.param(tf.int8, 300, "int64 values from 3 to 300", id="int-narrow"),
        pytest.param(tf.float32, 16_777_217, "int64 value 16777217, which float32 holds as 16777216.0", id="to-float"),
    ],
)
def test_validate_none_still_refuses_a_lossy_conversion_to_a_given_spec(dtype: Any, value: int, got: str) -> None:
    """validate="none" skips the checks, not the contract that a lossy conversion is never silent."""

    def examples() -> Iterator[np.ndarray]:
        yield np.array([1, 2], np.int64)
        yield np.array([3, value], np.int64)

    ds = tb.to_dataset(examples, spec=tf.TensorSpec((None,), dtype), peek=1, validate="none")
    with pytest.raises(tf.errors.OpError) as info:
        list(ds)
    assert f"SpecMismatchError: element 1 at x: expected dtype {dtype.name}" in str(info.value)
    assert got in str(info.value)
    fine = tb.to_dataset(lambda: iter([np.array([1, 2], np.int64)]), spec=tf.TensorSpec((None,), dtype),
                         validate="none")  # fmt: skip
    assert [v.tolist() for v in fine.as_numpy_iterator()] == [[1, 2]]


def test_an_error_met_while_the_user_iterates_does_not_keep_the_source_alive() -> None:
    """Only tfbridge's own reads before returning (pad_batch's lengths, adapt_normalization) keep the errors their
    steps raise, to raise them as they are; an error the user meets while iterating leaves nothing behind."""
    import gc
    import weakref

    class Big(_FailsAtFour):
        payload = None

    source = Big()
    source.payload = np.zeros(1_000_000)
    alive = weakref.ref(source)
    ds = tb.to_dataset(source, batched=False)
    with pytest.raises(tf.errors.OpError, match="SourceError: element 4"):
        list(ds)
    del ds, source
    gc.collect()
    assert alive() is None
