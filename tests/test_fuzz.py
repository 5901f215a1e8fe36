"""Fuzzing with hypothesis (issue 5): random nests, dtypes, shapes, ragged lists, NaN/Inf, empty arrays, object
arrays, None leaves, mixed Python types and samples that disagree.

The properties: ``tb.infer_spec``, ``tb.validate``, ``tb.to_dataset`` and ``tb.Spec.from_json`` either work or
raise a ``tb.TfBridgeError`` subclass whose message names the field (and is short); no other exception type
escapes. When they work, the result is checked: the dataset's ``element_spec`` is the spec's signature and the
values delivered are the values put in. ``Spec.from_json`` on hostile text never executes anything. What
fuzzing found is pinned as named regression tests in test_errors.py, test_values.py and test_spec.py.

Bounded by the ``tfbridge-fuzz`` settings profile (no deadline, a fixed number of examples per property) so
the file stays well under a minute; the properties that build a tf.data pipeline per example run fewer
examples than the others. ``TFBRIDGE_FUZZ_SCALE=10`` runs ten times as many examples. The number of
examples each property ran is printed at the end of the module (and written as JSON to
``$TFBRIDGE_FUZZ_COUNTS`` when that is set), for docs/RELIABILITY.md.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from _checks import check_delivered, check_error, check_op_error, object_array
from _sources import Listed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tfbridge as tb
from tfbridge.spec._json import _DTYPES as _SPEC_DTYPES

settings.register_profile(
    "tfbridge-fuzz",
    deadline=None,  # the first TensorFlow call of a process is slow; time is bounded by max_examples instead
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
_PROFILE = settings.get_profile("tfbridge-fuzz")
_SCALE = float(os.environ.get("TFBRIDGE_FUZZ_SCALE", "1"))


def fuzz(max_examples: int) -> settings:
    return settings(_PROFILE, max_examples=max(1, int(max_examples * _SCALE)))


EXAMPLES_RUN: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_examples_run(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not EXAMPLES_RUN:
        return
    total = sum(EXAMPLES_RUN.values())
    lines = [f"fuzz examples run: {total} in all"] + [f"  {name}: {n}" for name, n in sorted(EXAMPLES_RUN.items())]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print("\n" + "\n".join(lines))
    target = os.environ.get("TFBRIDGE_FUZZ_COUNTS")
    if target:
        with open(target, "w", encoding="utf-8") as f:
            json.dump({"total": total, "per_property": dict(EXAMPLES_RUN)}, f, indent=2)


# ---- strategies: leaves whose samples agree ---------------------------------------------------------------

_NUMERIC_DTYPE_NAMES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
)
_ARRAY_DTYPES = [np.dtype(name) for name in _NUMERIC_DTYPE_NAMES] + [np.dtype("U4"), np.dtype("S4")]
_PY_KINDS = ("int", "float", "bool", "str", "bytes", "complex")
_INT64 = (-(2**63), 2**63 - 1)


def py_scalar(kind: str) -> st.SearchStrategy[Any]:
    return {
        "int": st.integers(*_INT64),
        "float": st.floats(allow_nan=True, allow_infinity=True),
        "bool": st.booleans(),
        "str": st.text(max_size=4),
        "bytes": st.binary(max_size=4),
        "complex": st.complex_numbers(allow_nan=True, allow_infinity=True),
    }[kind]


@dataclass(frozen=True)
class LeafPlan:
    """How one field looks in every sample: a numpy array, a (nested, maybe ragged) Python list or a scalar.

    ``dims``: a size per dimension, None where samples differ. ``ragged``: the rows of one list differ."""

    form: str  # "array" | "list" | "scalar"
    dtype: Any  # np.dtype for arrays; a _PY_KINDS name for lists and scalars
    dims: tuple[int | None, ...]
    ragged: bool = False


dims_st = st.lists(st.one_of(st.none(), st.integers(0, 3)), max_size=3).map(tuple)


@st.composite
def leaf_plans(draw: Any, batched: bool) -> LeafPlan:
    form = draw(st.sampled_from(("array", "array", "list", "scalar") if not batched else ("array", "list")))
    dims = draw(dims_st)
    if batched:  # the batch axis (drawn per sample) comes first
        dims = (None, *dims)
    if form == "array":
        return LeafPlan("array", draw(st.sampled_from(_ARRAY_DTYPES)), dims)
    kind = draw(st.sampled_from(_PY_KINDS))
    if form == "scalar":
        return LeafPlan("scalar", kind, ())
    ragged = draw(st.booleans())
    if ragged:
        dims = dims[:1] or (None,)  # a list of rows of varying length (rank 2)
        dims = (*dims, None)
    return LeafPlan("list", kind, dims or (None,), ragged)


def plan_trees(batched: bool) -> st.SearchStrategy[Any]:
    keys = st.text(alphabet="ab'\"[]\\é_0", min_size=1, max_size=4)
    return st.recursive(
        leaf_plans(batched),
        lambda children: st.one_of(
            st.lists(children, min_size=1, max_size=3).map(tuple),
            st.lists(children, min_size=1, max_size=3).filter(_is_structure_list),
            st.dictionaries(keys, children, min_size=1, max_size=3),
        ),
        max_leaves=4,
    )


def _nested_list(kind: str, dims: list[int], ragged: bool) -> st.SearchStrategy[Any]:
    if len(dims) == 1:
        return st.lists(py_scalar(kind), min_size=dims[0], max_size=dims[0])
    if ragged:  # rank 2: rows of any length
        return st.lists(st.lists(py_scalar(kind), max_size=3), min_size=dims[0], max_size=dims[0])
    return st.lists(_nested_list(kind, dims[1:], False), min_size=dims[0], max_size=dims[0])


@st.composite
def value_of(draw: Any, plan: LeafPlan, batch: int | None) -> Any:
    if plan.form == "scalar":
        return draw(py_scalar(plan.dtype))
    dims = [draw(st.integers(0, 3)) if d is None else d for d in plan.dims]
    if batch is not None:
        dims[0] = batch
    if plan.form == "array":
        return draw(hnp.arrays(plan.dtype, tuple(dims)))
    return draw(_nested_list(plan.dtype, dims, plan.ragged))


def build(tree: Any, leaf: Callable[[LeafPlan, tuple[Any, ...]], Any], path: tuple[Any, ...] = ()) -> Any:
    """The nest ``tree`` with every LeafPlan replaced by ``leaf(plan, path)``."""
    if isinstance(tree, LeafPlan):
        return leaf(tree, path)
    if isinstance(tree, dict):
        return {k: build(v, leaf, (*path, k)) for k, v in tree.items()}
    items = [build(v, leaf, (*path, i)) for i, v in enumerate(tree)]
    return tuple(items) if isinstance(tree, tuple) else items


def plan_paths(tree: Any) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    build(tree, lambda plan, path: out.append(path))
    return out


def _is_structure_list(items: list[Any]) -> bool:
    """A list of fields must hold an array, tuple or dict: a list of lists and scalars is one tensor."""
    return any(not isinstance(v, LeafPlan) or v.form == "array" for v in items)


@st.composite
def agreeing_samples(draw: Any, batched: bool, max_samples: int = 4) -> tuple[Any, list[Any]]:
    """(plan tree, samples): every sample has the tree's structure, dtypes and ranks; sizes vary."""
    tree = draw(plan_trees(batched))
    n = draw(st.integers(1, max_samples))
    samples = []
    for _ in range(n):
        batch = draw(st.integers(0, 3)) if batched else None
        samples.append(build(tree, lambda plan, path, batch=batch: draw(value_of(plan, batch))))
    return tree, samples


# ---- strategies: anything at all -----------------------------------------------------------------------------

_ODD_OBJECTS = st.sampled_from([object(), {1, 2}, Ellipsis, range(3), b"", "", 2**70, -(2**64), 2**63, float("nan")])


def hostile_leaves() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),  # unbounded: beyond int64 too
        st.floats(),
        st.complex_numbers(),
        st.text(max_size=3),
        st.binary(max_size=3),
        _ODD_OBJECTS,
    )
    mixed_lists = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
    object_arrays = st.lists(st.one_of(scalars, st.lists(scalars, max_size=2)), max_size=3).map(object_array)
    odd_arrays = st.sampled_from(
        [
            np.array(["2020-01-01"], dtype="datetime64[D]"),
            np.zeros(2, dtype=[("a", "i4")]),
            np.zeros((0, 2), dtype=object),
            np.array([[1, 2], [3]], dtype=object),
            np.array([None, 1], dtype=object),
            np.array(["a", b"b", 1], dtype=object),
        ]
    )
    arrays = hnp.arrays(
        st.sampled_from(_ARRAY_DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)
    )
    return st.one_of(scalars, mixed_lists, object_arrays, odd_arrays, arrays)


def hostile_elements() -> st.SearchStrategy[Any]:
    keys = st.one_of(st.text(max_size=3), st.integers(-2, 2))
    return st.recursive(
        hostile_leaves(),
        lambda children: st.one_of(
            st.lists(children, max_size=3).map(tuple),
            st.lists(children, max_size=3),
            st.dictionaries(keys, children, max_size=3),
        ),
        max_leaves=5,
    )


@st.composite
def disagreeing_samples(draw: Any, batched: bool) -> list[Any]:
    """Samples that mostly agree, with one field of one sample (or a whole sample) replaced by junk."""
    tree, samples = draw(agreeing_samples(batched))
    paths = plan_paths(tree)
    victim = draw(st.integers(0, len(samples)))
    if victim == len(samples):
        samples.append(draw(hostile_elements()))
        return samples
    target = draw(st.sampled_from(paths))
    junk = draw(hostile_leaves())
    samples[victim] = _replace(samples[victim], target, junk)
    return samples


def _replace(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        return {k: (_replace(v, rest, value) if k == head else v) for k, v in tree.items()}
    items = [_replace(v, rest, value) if i == head else v for i, v in enumerate(tree)]
    return tuple(items) if isinstance(tree, tuple) else items


def source_of(samples: list[Any], kind: str) -> Any:
    """The samples as an indexed source or as a generator function (a stream)."""
    if kind == "indexed":
        return Listed(samples)

    def generate() -> Iterator[Any]:
        yield from samples

    return generate


# ---- properties: infer_spec and validate ------------------------------------------------------------------


@fuzz(200)
@given(data=st.data(), batched=st.booleans())
def test_infer_and_validate_agreeing_samples_work_or_name_the_field(data: Any, batched: bool) -> None:
    EXAMPLES_RUN["infer_spec+validate, agreeing samples"] += 1
    tree, samples = data.draw(agreeing_samples(batched))
    try:
        spec = tb.infer_spec(Listed(samples), batched=batched)
    except tb.TfBridgeError as err:
        check_error(err)
        return
    assert spec.batched is batched
    assert len(list(spec.fields())) == len(plan_paths(tree))
    assert tb.validate(Listed(samples), spec) == len(samples)  # every sample was peeked: all fit
    again = tb.Spec.from_json(spec.to_json())
    assert again == spec and again.signature == spec.signature


@fuzz(300)
@given(samples=st.lists(hostile_elements(), min_size=1, max_size=3), batched=st.booleans())
def test_infer_and_validate_anything_work_or_raise_tfbridge_errors(samples: list[Any], batched: bool) -> None:
    EXAMPLES_RUN["infer_spec+validate, anything"] += 1
    try:
        spec = tb.infer_spec(Listed(samples), batched=batched)
    except tb.TfBridgeError as err:
        check_error(err)
        return
    assert tb.validate(Listed(samples), spec) == len(samples)
    if _string_keys(spec.structure):
        assert tb.Spec.from_json(spec.to_json()) == spec
    else:
        with pytest.raises(tb.TfBridgeError, match="dict keys must be strings"):
            spec.to_json()


@fuzz(150)
@given(data=st.data(), batched=st.booleans())
def test_validate_against_the_spec_of_other_samples_names_index_and_field(data: Any, batched: bool) -> None:
    EXAMPLES_RUN["validate against another spec"] += 1
    _, samples = data.draw(agreeing_samples(batched, max_samples=2))
    try:
        spec = tb.infer_spec(Listed(samples), batched=batched)
    except tb.TfBridgeError as err:
        check_error(err)
        return
    others = data.draw(disagreeing_samples(batched))
    try:
        checked = tb.validate(Listed(others), spec)
    except tb.SpecMismatchError as err:
        check_error(err)
        assert err.index is not None and 0 <= err.index < len(others)
        assert err.path and (err.expected or err.got)
        return
    except tb.TfBridgeError as err:
        check_error(err)
        return
    assert checked == len(others)


def _string_keys(tree: Any) -> bool:
    if isinstance(tree, dict):
        return all(isinstance(k, str) for k in tree) and all(map(_string_keys, tree.values()))
    if isinstance(tree, (tuple, list)):
        return all(map(_string_keys, tree))
    return True


# ---- properties: to_dataset ---------------------------------------------------------------------------------


def _deliver(source: Any, samples: list[Any], batched: bool, **kwargs: Any) -> list[Any] | None:
    """to_dataset, then every element; None when tfbridge refused (the error checked)."""
    try:
        ds = tb.to_dataset(source, batched=batched, executor="serial", cast_floats=None, **kwargs)
    except tb.TfBridgeError as err:
        check_error(err)
        return None
    spec = tb.infer_spec(source, batched=batched)
    assert ds.element_spec == spec.signature
    return list(ds)


@fuzz(50)
@given(data=st.data(), batched=st.booleans(), kind=st.sampled_from(["indexed", "stream"]))
def test_to_dataset_delivers_agreeing_samples_unchanged(data: Any, batched: bool, kind: str) -> None:
    EXAMPLES_RUN["to_dataset, agreeing samples"] += 1
    _, samples = data.draw(agreeing_samples(batched))
    delivered = _deliver(source_of(samples, kind), samples, batched)
    if delivered is None:
        return
    assert len(delivered) == len(samples)
    for element, sample in zip(delivered, samples, strict=False):
        check_delivered(element, sample)


@fuzz(120)
@given(data=st.data(), batched=st.booleans(), kind=st.sampled_from(["indexed", "stream"]))
def test_to_dataset_of_disagreeing_samples_works_or_names_the_field(data: Any, batched: bool, kind: str) -> None:
    EXAMPLES_RUN["to_dataset, disagreeing samples"] += 1
    samples = data.draw(disagreeing_samples(batched))
    delivered = _deliver(source_of(samples, kind), samples, batched)
    if delivered is not None:  # every sample was peeked, so nothing can fail inside the pipeline
        assert len(delivered) == len(samples)


@fuzz(60)
@given(data=st.data(), batched=st.booleans(), kind=st.sampled_from(["indexed", "stream"]))
def test_to_dataset_error_inside_the_pipeline_begins_with_the_tfbridge_class(
    data: Any, batched: bool, kind: str
) -> None:
    EXAMPLES_RUN["to_dataset, error inside tf.data (peek=1)"] += 1
    samples = data.draw(disagreeing_samples(batched))
    source = source_of(samples, kind)
    try:
        ds = tb.to_dataset(source, batched=batched, executor="serial", cast_floats=None, peek=1)
    except tb.TfBridgeError as err:
        check_error(err)
        return
    count = 0
    try:
        for _ in ds:
            count += 1
    except tf.errors.OpError as err:
        msg = check_op_error(err)
        first_line = msg.splitlines()[0]
        assert re.match(r"\w+Error: element \d+", first_line), first_line
        assert msg.startswith(("SpecMismatchError: ", "SourceError: "))
        index = int(re.search(r"element (\d+)", first_line).group(1))  # type: ignore[union-attr]
        assert index == count, "the error names the element that failed"
        assert "Hint:" in msg
        return
    assert count == len(samples)


@fuzz(60)
@given(data=st.data())
def test_validate_all_and_given_spec_check_every_element(data: Any) -> None:
    EXAMPLES_RUN["to_dataset(validate='all', spec=other)"] += 1
    _, first = data.draw(agreeing_samples(False, max_samples=2))
    try:
        spec = tb.infer_spec(Listed(first), batched=False)
    except tb.TfBridgeError as err:
        check_error(err)
        return
    others = data.draw(disagreeing_samples(False))
    try:
        ds = tb.to_dataset(Listed(others), spec=spec, executor="serial", validate="all", peek=1)
    except tb.SpecMismatchError as err:
        check_error(err)
        assert err.index is not None
        return
    except tb.TfBridgeError as err:
        check_error(err)
        return
    assert ds.element_spec == spec.signature, "a given spec is delivered as given (no float policy)"
    assert len(list(ds)) == len(others)


# ---- properties: in-memory columns and tf.data ---------------------------------------------------------------

column_dtypes = st.sampled_from(_ARRAY_DTYPES)


@st.composite
def columns(draw: Any) -> Any:
    rows = draw(st.integers(0, 4))

    def column() -> np.ndarray:
        row_shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
        return draw(hnp.arrays(draw(column_dtypes), (rows, *row_shape)))

    shape = draw(st.sampled_from(["one", "tuple", "dict"]))
    if shape == "one":
        return column()
    if shape == "tuple":
        return tuple(column() for _ in range(draw(st.integers(1, 3))))
    names = draw(st.lists(st.text("abc", min_size=1, max_size=2), min_size=1, max_size=3, unique=True))
    return {name: column() for name in names}


def _rows(cols: Any) -> list[Any]:
    first = cols if isinstance(cols, np.ndarray) else next(iter(cols.values() if isinstance(cols, dict) else cols))
    out = []
    for i in range(len(first)):
        if isinstance(cols, np.ndarray):
            out.append(cols[i])
        elif isinstance(cols, dict):
            out.append({k: v[i] for k, v in cols.items()})
        else:
            out.append(tuple(v[i] for v in cols))
    return out


@fuzz(60)
@given(cols=columns(), shuffle=st.booleans())
def test_array_columns_are_delivered_row_by_row(cols: Any, shuffle: bool) -> None:
    EXAMPLES_RUN["to_dataset, numpy columns"] += 1
    rows = _rows(cols)
    try:
        spec = tb.infer_spec(cols)
    except tb.TfBridgeError as err:
        check_error(err)
        assert not rows, "columns with rows give a spec"
        return
    assert tb.validate(cols) == len(rows)
    ds = tb.to_dataset(cols, executor="serial", cast_floats=None, shuffle=shuffle, seed=0)
    assert ds.element_spec == spec.signature
    delivered = list(ds)
    assert len(delivered) == len(rows)
    if not shuffle:
        for element, row in zip(delivered, rows, strict=False):
            check_delivered(element, row)


@st.composite
def hostile_columns(draw: Any) -> dict[str, np.ndarray]:
    """A dict of 1-D columns, some of them of dtypes TensorFlow lacks or object columns holding junk."""
    rows = draw(st.integers(0, 4))
    object_items = st.one_of(
        st.none(), st.integers(), st.floats(), st.text(max_size=2), st.binary(max_size=2),
        st.lists(st.integers(-3, 3), max_size=3), _ODD_OBJECTS,
    )

    def column() -> np.ndarray:
        kind = draw(st.sampled_from(["plain", "datetime", "timedelta", "void", "object"]))
        n = rows + draw(st.sampled_from([0, 0, 0, 1]))  # now and then a column of another length
        if kind == "plain":
            return draw(hnp.arrays(column_dtypes, (n,)))
        if kind == "datetime":
            return np.arange(n).astype("datetime64[D]")
        if kind == "timedelta":
            return np.arange(n).astype("timedelta64[s]")
        if kind == "void":
            return np.zeros(n, dtype=[("a", "i4")])
        return object_array(draw(st.lists(object_items, min_size=n, max_size=n)))

    names = draw(st.lists(st.text("abc", min_size=1, max_size=2), min_size=1, max_size=3, unique=True))
    return {name: column() for name in names}


@fuzz(60)
@given(cols=hostile_columns(), as_frame=st.booleans())
def test_columns_and_dataframes_of_any_dtype_work_or_name_the_column(cols: dict[str, Any], as_frame: bool) -> None:
    EXAMPLES_RUN["to_dataset, hostile columns / DataFrames"] += 1
    source: Any = cols
    if as_frame:
        import pandas as pd

        if len({len(c) for c in cols.values()}) > 1:
            return  # pandas refuses columns of different lengths itself
        source = pd.DataFrame(cols)
    try:
        spec = tb.infer_spec(source)
        assert tb.validate(source) == len(next(iter(cols.values())))
        ds = tb.to_dataset(source, executor="serial", cast_floats=None)
    except tb.TfBridgeError as err:
        check_error(err)
        return
    assert ds.element_spec == spec.signature
    assert len(list(ds)) == len(next(iter(cols.values())))


@fuzz(40)
@given(cols=columns(), batch=st.one_of(st.none(), st.integers(1, 3)))
def test_tf_data_sources_keep_their_element_spec_and_values(cols: Any, batch: int | None) -> None:
    EXAMPLES_RUN["to_dataset, tf.data source"] += 1
    ds = tf.data.Dataset.from_tensor_slices(cols)
    if batch is not None:
        ds = ds.batch(batch)
    expected = list(ds)
    try:
        spec = tb.infer_spec(ds)
        out = tb.to_dataset(ds, executor="serial", cast_floats=None)
    except tb.TfBridgeError as err:
        check_error(err)
        return
    assert out.element_spec == spec.signature
    assert spec.batched is (batch is not None)
    delivered = list(out)
    assert len(delivered) == len(expected)
    for element, want in zip(delivered, expected, strict=False):
        check_delivered(element, want)


# ---- Spec.from_json on hostile input ---------------------------------------------------------------------------

SENTINEL = os.path.join(tempfile.gettempdir(), f"tfbridge-fuzz-pwned-{os.getpid()}")
_PAYLOADS = [
    f"__import__('os').system('touch {SENTINEL}')",
    f"eval(\"__import__('os').system('touch {SENTINEL}')\")",
    f"exec('open(\\'{SENTINEL}\\', \\'w\\').close()')",
    f"!!python/object/apply:os.system ['touch {SENTINEL}']",
    f"cos\nsystem\n(S'touch {SENTINEL}'\ntR.",  # a pickle
    f'{{"py/object": "os.system", "py/newargs": ["touch {SENTINEL}"]}}',
    f"tf.TensorSpec(shape=(), dtype=tf.float32), __import__('os').system('touch {SENTINEL}')",
    f"float32'); __import__('os').system('touch {SENTINEL}'); ('",
]

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**40), max_value=10**40),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=6),
        st.sampled_from(_PAYLOADS),
        st.sampled_from(["tensor", "ragged", "sparse", "tuple", "list", "dict", "float32", "string", "int64"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(["type", "shape", "dtype", "items", "ragged_rank", "batched", "signature"]),
                      st.text(max_size=4), st.sampled_from(_PAYLOADS)),
            children,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


@st.composite
def leaf_json(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(["tensor", "ragged", "sparse"]))
    shape = draw(st.lists(st.one_of(st.none(), st.integers(-2, 5), st.integers(2**62, 10**30)), max_size=4))
    out: dict[str, Any] = {"type": kind, "shape": shape, "dtype": draw(st.sampled_from(sorted(_SPEC_DTYPES)))}
    if kind == "ragged":
        out["ragged_rank"] = draw(st.integers(-1, 4))
    return out


signature_json = st.recursive(
    leaf_json(),
    lambda children: st.one_of(
        st.builds(lambda items: {"type": "tuple", "items": items}, st.lists(children, max_size=3)),
        st.builds(lambda items: {"type": "list", "items": items}, st.lists(children, max_size=3)),
        st.builds(
            lambda items: {"type": "dict", "items": items},
            st.dictionaries(st.one_of(st.text(max_size=4), st.sampled_from(_PAYLOADS)), children, max_size=3),
        ),
    ),
    max_leaves=6,
)


def _mutate(doc: Any, mutation: Any, where: int) -> Any:
    """Replace the ``where``-th node (in pre-order) of a JSON document by ``mutation``."""
    counter = [where]

    def walk(node: Any) -> Any:
        if counter[0] == 0:
            counter[0] -= 1
            return mutation
        counter[0] -= 1
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(doc)


hostile_json_text = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.sampled_from(_PAYLOADS),
    json_values.map(json.dumps),
    st.builds(lambda sig, batched: json.dumps({"batched": batched, "signature": sig}), signature_json, json_values),
    st.builds(
        lambda sig, mutation, where: json.dumps({"batched": False, "signature": _mutate(sig, mutation, where)}),
        signature_json,
        json_values,
        st.integers(0, 12),
    ),
    st.integers(1, 5000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 5000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
    st.integers(60, 200).map(
        lambda depth: json.dumps({"batched": True, "signature": _deep_tuple(depth)})
    ),
    st.sampled_from(["NaN", "Infinity", "-Infinity", '{"batched": NaN, "signature": 1}', "1e999", "9" * 5000]),
    st.sampled_from([None, 3, 2.5, [], {}, ("a",), object()]),  # not text at all
)


def _deep_tuple(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "tensor", "shape": [1], "dtype": "float32"}
    for _ in range(depth):
        node = {"type": "tuple", "items": [node]}
    return node


_ALLOWED_CALLS = {"tf.TensorSpec", "tf.RaggedTensorSpec", "tf.SparseTensorSpec", "keras.Input"}
_ALLOWED_NAMES = {"tf", "keras", "output_signature", "inputs"}


def check_generated_code(code: str) -> None:
    """spec.code() imports keras and tensorflow (and collections, for namedtuples), and only calls the spec and
    Input constructors, collections.namedtuple with constant arguments, and the namedtuple types it so defines."""
    tree = ast.parse(code)
    defined = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.value).startswith("collections.namedtuple(")
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            allowed = ("import keras", "import tensorflow as tf", "import collections")
            assert ast.unparse(node) in allowed, ast.unparse(node)
        elif isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            assert called in _ALLOWED_CALLS | defined | {"collections.namedtuple"}, ast.unparse(node)
            if called == "collections.namedtuple":
                assert all(isinstance(a, (ast.Constant, ast.List)) for a in node.args), ast.unparse(node)
        elif isinstance(node, ast.Name):
            assert node.id in _ALLOWED_NAMES | defined | {"collections"}, node.id
        else:
            assert not isinstance(node, (ast.Lambda, ast.Subscript, ast.JoinedStr)), ast.unparse(node)


@fuzz(500)
@given(text=hostile_json_text)
def test_from_json_on_hostile_input_never_executes_and_raises_only_tfbridge_errors(text: Any) -> None:
    EXAMPLES_RUN["Spec.from_json, hostile input"] += 1
    try:
        spec = tb.Spec.from_json(text)
    except tb.TfBridgeError as err:
        check_error(err, needs_field=False)
        assert str(err).startswith("Spec.from_json: ")
    else:
        # what parses is a real spec: TensorFlow takes its signature, it round-trips, and its code() only
        # builds specs and inputs whatever the dict keys say
        assert isinstance(spec.signature, (tuple, list, dict, tf.TypeSpec))
        assert tb.Spec.from_json(spec.to_json()) == spec
        try:
            code = spec.code()
        except tb.TfBridgeError as err:  # keys whose Keras input names collide: refused, named
            check_error(err, needs_field=False)
            assert "would both be named" in str(err), str(err)
        else:
            check_generated_code(code)
    assert not os.path.exists(SENTINEL), "Spec.from_json executed code from its input"


def test_from_json_payloads_in_every_field_are_refused_or_kept_as_plain_strings() -> None:
    EXAMPLES_RUN["Spec.from_json, payload in every field"] += 1
    leaf = {"type": "tensor", "shape": [2], "dtype": "float32"}
    for payload in _PAYLOADS:
        for doc in (
            {"batched": False, "signature": {**leaf, "dtype": payload}},
            {"batched": False, "signature": {**leaf, "type": payload}},
            {"batched": False, "signature": {**leaf, "shape": [payload]}},
            {"batched": payload, "signature": leaf},
            {"batched": False, "signature": payload},
        ):
            with pytest.raises(tb.TfBridgeError, match=r"^Spec\.from_json: "):
                tb.Spec.from_json(json.dumps(doc))
        keyed_doc = {"batched": False, "signature": {"type": "dict", "items": {payload: leaf}}}
        keyed = tb.Spec.from_json(json.dumps(keyed_doc))
        assert list(keyed.structure) == [payload]  # a key is data
        namespace: dict[str, Any] = {}
        exec(keyed.code(), namespace)
        assert list(namespace["output_signature"]) == [payload]
    assert not os.path.exists(SENTINEL)
