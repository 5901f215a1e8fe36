"""Elements checked against a spec, given or inferred: ``tb.validate``, ``to_dataset(validate=...)``,
``to_dataset(spec=...)`` (element_spec, conversion, the peek checked), and a bad element deep in a big source
(issue 5): one image of the wrong channel count at index 4,321 of a directory-like source gives
SpecMismatchError naming 4321, the field path, the expected and received shapes and a hint, in a short message
— from ``tb.validate``, from ``to_dataset(validate="all")`` before iterating, and from plain ``to_dataset`` while
iterating (every element is checked where it is produced). The messages of every other error path are in
test_errors.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from _sources import GRAY_VALUE, Counting, ImageFolder, Listed, PairFolder

import tfbridge as tb

pytestmark = pytest.mark.timeout(120)

_BAD = 4321


class NpyFolder:
    """Images stored one .npy file per element in a directory, read on demand (label in the file name)."""

    def __init__(self, root: Path) -> None:
        self.files = sorted(root.glob("*.npy"))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        path = self.files[index]
        return {"image": np.load(path)}, int(path.stem.split("_label")[1])


# ---- to_dataset with a spec ---------------------------------------------------------------------------------


def test_element_spec_equals_the_given_spec_and_elements_are_converted() -> None:
    spec = tb.Spec.from_signature(
        (tf.TensorSpec((None, 2), tf.float16), tf.TensorSpec((None,), tf.int32)), batched=True
    )
    ds = tb.to_dataset(Counting(), spec=spec)
    assert ds.element_spec == spec.signature
    x, y = next(iter(ds))
    assert x.dtype == tf.float16 and y.dtype == tf.int32


def test_a_given_float64_spec_is_delivered_as_given_not_cast_to_floatx() -> None:
    """Found by fuzzing: a bool element under a float64 spec inferred from other samples."""
    spec = tb.infer_spec(Listed([0.0]), batched=False)
    ds = tb.to_dataset(Listed([False]), spec=spec, executor="serial", validate="all", peek=1)
    assert ds.element_spec == spec.signature == tf.TensorSpec((), tf.float64)
    assert [x.numpy() for x in ds] == [0.0]


def test_element_spec_equals_the_inferred_spec_without_float_policy() -> None:
    source = Counting()
    assert tb.to_dataset(source, cast_floats=None).element_spec == tb.infer_spec(source).signature


def test_peeked_elements_are_checked_against_a_given_spec() -> None:
    spec = tb.Spec.from_signature((tf.TensorSpec((None, 5), tf.float32), tf.TensorSpec((None,), tf.int64)))
    with pytest.raises(tb.SpecMismatchError, match=r"element 0 at x: expected shape \(None, 5\)"):
        tb.to_dataset(Counting(), spec=spec)


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_validate_none_still_converts_to_the_float_cast_and_a_given_spec(executor: str) -> None:
    """validate="none" skips the checks, not the conversion: float64 data under the default float cast, a
    generator of Python floats, and int64 labels under a given int32 spec come out in the promised dtypes."""
    cast = tb.to_dataset(Counting(5), validate="none", executor=executor)
    assert [(x.dtype, x.numpy()[0, 0]) for x, _ in cast] == [(tf.float32, float(i)) for i in range(5)]
    spec = tb.Spec.from_signature((tf.TensorSpec((None, 2), tf.float64), tf.TensorSpec((None,), tf.int32)))
    given = tb.to_dataset(Counting(5), spec=spec, validate="none", executor=executor)
    assert [(y.dtype, y.numpy().tolist()) for _, y in given] == [(tf.int32, [i] * 4) for i in range(5)]

    def floats() -> Any:
        for i in range(3):
            yield [i / 2, 1.0], i

    got = [(x.dtype, x.numpy().tolist()) for x, _ in tb.to_dataset(floats, batched=False, validate="none")]
    assert got == [(tf.float32, [i / 2, 1.0]) for i in range(3)]


def test_validate_all_checks_every_element_before_returning() -> None:
    class WiderAt(Counting):
        def __getitem__(self, i: int) -> Any:
            x, y = super().__getitem__(i)
            return (np.zeros((4, 3)) if i == 30 else x), y

    tb.to_dataset(WiderAt(), validate="peek", peek=2)  # the peek at 0 and 36 misses index 30
    with pytest.raises(tb.SpecMismatchError) as info:
        tb.to_dataset(WiderAt(), validate="all", peek=2)
    assert info.value.index == 30 and info.value.path == "x"


# ---- a bad image at 4,321 -------------------------------------------------------------------------------------


_FIRST_LINE = "element 4321 at x['image']: expected shape (32, 32, 3), got shape (32, 32, 1)."


def _check_short(message: str) -> None:
    """Long values cut short: a few lines, none of them long, and no pixel values."""
    lines = message.splitlines()
    assert len(message) < 600 and len(lines) <= 3, message
    assert all(len(line) < 320 for line in lines), message
    assert f"{GRAY_VALUE}, {GRAY_VALUE}" not in message and "array(" not in message


def _check_channels_message(message: str, first_line: str = _FIRST_LINE) -> None:
    assert message.splitlines()[0] == first_line
    assert "4321" in message and "x['image']" in message
    assert "(32, 32, 3)" in message and "(32, 32, 1)" in message
    hint = message.splitlines()[1]
    assert hint.startswith("Hint: the last axis looks like image channels: 1 here, 3 in the spec.")
    assert "image.convert('RGB')" in hint


def _tfbridge_part(err: tf.errors.OpError) -> str:
    """The tfbridge message inside a TensorFlow OpError: after TensorFlow's ``{{function_node ...}}`` prefix,
    before the traceback that travels with it."""
    message = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", err.message)
    return message.split("\nTraceback (most recent call last):")[0]


# ---- tb.validate ----------------------------------------------------------------------------------------------


def test_validate_names_element_4321_the_field_both_shapes_and_a_channel_hint() -> None:
    with pytest.raises(tb.SpecMismatchError) as info:
        tb.validate(ImageFolder(), batched=False)

    err = info.value
    assert (err.index, err.path) == (_BAD, "x['image']")
    assert (err.expected, err.got) == ("shape (32, 32, 3)", "shape (32, 32, 1)")
    _check_channels_message(str(err))
    _check_short(str(err))


def test_validate_up_to_the_bad_image_checks_4321_elements_and_passes() -> None:
    assert tb.validate(ImageFolder(), batched=False, limit=_BAD) == _BAD


def test_validate_of_pairs_names_the_image_as_x() -> None:
    with pytest.raises(tb.SpecMismatchError) as info:
        tb.validate(PairFolder(), batched=False)

    assert (info.value.index, info.value.path) == (_BAD, "x")
    assert str(info.value).startswith("element 4321 at x: expected shape (32, 32, 3), got shape (32, 32, 1).\nHint: ")
    _check_short(str(info.value))


def test_validate_of_a_grayscale_image_without_channel_axis_says_to_add_it() -> None:
    with pytest.raises(tb.SpecMismatchError) as info:
        tb.validate(ImageFolder(bad_shape=(32, 32)), batched=False)

    err = info.value
    assert (err.index, err.path) == (_BAD, "x['image']")
    assert (err.expected, err.got) == ("shape (32, 32, 3) (rank 3)", "shape (32, 32) (rank 2)")
    message = str(err)
    assert message.startswith(
        "element 4321 at x['image']: expected shape (32, 32, 3) (rank 3), got shape (32, 32) (rank 2).\n"
        "Hint: this looks like a grayscale image without its channel axis; the spec has 3 channels."
    )
    assert "image[..., np.newaxis]" in message
    _check_short(message)


def test_a_shape_mismatch_that_is_no_channel_count_keeps_the_generic_hint() -> None:
    with pytest.raises(tb.SpecMismatchError) as info:
        tb.validate(ImageFolder(bad_shape=(31, 32, 3)), batched=False)

    message = str(info.value)
    assert message.splitlines()[0] == "element 4321 at x['image']: expected shape (32, 32, 3), got shape (31, 32, 3)."
    assert message.splitlines()[1].startswith("Hint: this element's shape differs from the spec; the peek may have")


# ---- to_dataset ---------------------------------------------------------------------------------------------


def test_to_dataset_validate_all_raises_before_delivering_anything() -> None:
    with pytest.raises(tb.SpecMismatchError) as info:
        tb.to_dataset(ImageFolder(), batched=False, validate="all", executor="serial")

    assert (info.value.index, info.value.path) == (_BAD, "x['image']")
    _check_channels_message(str(info.value))
    _check_short(str(info.value))


@pytest.mark.parametrize("executor", ["serial", "thread", "process"])
def test_to_dataset_checks_every_element_and_stops_at_4321_with_the_tfbridge_message(executor: str) -> None:
    ds = tb.to_dataset(ImageFolder(), batched=False, executor=executor)  # the peek misses the bad image
    delivered: list[int] = []

    with pytest.raises(tf.errors.OpError) as info:
        for _, label in ds:
            delivered.append(int(label))

    assert delivered == [i % 10 for i in range(_BAD)]  # every element before it, in order, and no more
    message = _tfbridge_part(info.value)
    assert message.startswith("SpecMismatchError: ")
    _check_channels_message(message.removeprefix("SpecMismatchError: "), _FIRST_LINE)
    _check_short(message)


# ---- real files on disk ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def npy_folder(tmp_path_factory: pytest.TempPathFactory) -> NpyFolder:
    root = tmp_path_factory.mktemp("images")
    rgb = np.zeros((32, 32, 3), np.uint8)
    for i in range(_BAD + 40):
        image = np.full((32, 32, 1), GRAY_VALUE, np.uint8) if i == _BAD else rgb
        np.save(root / f"{i:05d}_label{i % 10}.npy", image)
    return NpyFolder(root)


def test_npy_directory_validate_names_4321(npy_folder: NpyFolder) -> None:
    with pytest.raises(tb.SpecMismatchError) as info:
        tb.validate(npy_folder, batched=False)

    assert (info.value.index, info.value.path) == (_BAD, "x['image']")
    _check_channels_message(str(info.value))
    _check_short(str(info.value))


def test_npy_directory_to_dataset_stops_at_4321_while_iterating(npy_folder: NpyFolder) -> None:
    ds = tb.to_dataset(npy_folder, batched=False, executor="thread")
    count = 0

    with pytest.raises(tf.errors.OpError) as info:
        for _ in ds:
            count += 1

    assert count == _BAD
    message = _tfbridge_part(info.value)
    assert message.startswith(f"SpecMismatchError: {_FIRST_LINE}\nHint: the last axis looks like image channels")
    _check_short(message)


def test_a_flat_tuple_of_numpy_values_is_checked_like_any_other_element() -> None:
    """(x, y) tuples of numpy values take a shorter path through the check; it must see every mismatch."""
    from tfbridge.validate import Conformer

    good = [(np.zeros(3, np.int32), np.int32(1)), (np.zeros(5, np.int32), np.int32(0))]
    conform = Conformer(tb.infer_spec(good, batched=False))
    out = conform((np.arange(4, dtype=np.int32), np.int32(7)), 0)
    assert type(out) is tuple and out[1].dtype == np.int32 and out[1].shape == () and out[0].tolist() == [0, 1, 2, 3]
    mismatch = tb.SpecMismatchError
    with pytest.raises(mismatch, match=r"^element 3 at x: expected shape \(None,\) \(rank 1\), got shape \(2, 2\)"):
        conform((np.zeros((2, 2), np.int32), np.int32(1)), 3)
    with pytest.raises(mismatch, match=r"^element 4 at y: expected dtype int32, got dtype float32"):
        conform((np.zeros(2, np.int32), np.float32(1.5)), 4)
    with pytest.raises(mismatch, match=r"^element 5 at x: expected tuple of length 2, got tuple of length 3"):
        conform((np.zeros(2, np.int32), np.int32(1), np.int32(2)), 5)
    with pytest.raises(mismatch, match=r"^element 6 at x: expected tuple of length 2, got list of length 2"):
        conform([np.zeros(2, np.int32), np.int32(1)], 6)
    assert conform((np.zeros(2, np.int32), 1), 7)[1].dtype == np.int32  # a Python int: the usual path, converted
