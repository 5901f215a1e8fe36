"""Light copies of Keras ``PyDataset`` sources for worker processes.

A ``keras.utils.PyDataset`` subclass (``keras.utils.Sequence`` is the same class in Keras 3) pickled as it is
makes every worker import Keras, and so TensorFlow, to unpickle it: about 660 MB and several seconds per
worker, for a ``__getitem__`` that may only use numpy or PIL. Its copy for the workers is *light* instead: each
of the user's classes below the Keras base travels by value (its own methods and attributes, the same code)
with :class:`PyDatasetStandIn` in place of the Keras base, and the instance's ``__dict__`` as it is. The
stand-in holds what the Keras base gives a subclass (``workers``, ``use_multiprocessing``, ``max_queue_size``,
``num_batches``, ``__iter__``, the epoch hooks, a ``__getitem__`` that raises ``NotImplementedError``), so
``super().__init__(...)`` and calls of the base's methods behave as with Keras.

The modules of those classes are pickled by value for the time of the dump (cloudpickle's
``register_pickle_by_value``), so the worker never imports the user's module, whose ``from keras.utils import
PyDataset`` would import Keras. A function pickled by value takes along the globals its code names: a
``__getitem__`` that uses ``np`` makes the worker import numpy, one that uses ``keras`` or ``tf`` imports them.

Differences a user's code can see in a worker: ``isinstance(self, keras.utils.PyDataset)`` is False there, and
module-level values the methods use are those of this process at the time of the pass (not re-created by
importing the module). A class the light copy cannot be made for (a metaclass other than ``type``,
``__slots__``, a Keras base with members the stand-in lacks) travels as before.
"""

from __future__ import annotations

import itertools
import sys
import threading
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

# (module, qualname) of the Keras classes replaced by the stand-in in light copies
_KERAS_BASES = frozenset({("keras.src.trainers.data_adapters.py_dataset_adapter", "PyDataset")})
# members of a Keras base the stand-in need not have: the class's own bookkeeping and Keras's export metadata
_BOOKKEEPING = frozenset(
    {"__dict__", "__doc__", "__module__", "__weakref__", "__qualname__", "__firstlineno__", "__static_attributes__"}
)
# members of a user's class not copied into its light copy: the class's own bookkeeping, set when it is made
_NOT_COPIED = _BOOKKEEPING - {"__doc__"}


class PyDatasetStandIn:
    """What ``keras.utils.PyDataset`` gives its subclasses, without Keras: the base of light copies in workers."""

    def __init__(self, workers: int = 1, use_multiprocessing: bool = False, max_queue_size: int = 10) -> None:
        self._workers = workers
        self._use_multiprocessing = use_multiprocessing
        self._max_queue_size = max_queue_size

    def _warn_if_super_not_called(self) -> None:
        missing = False
        for name, default in (("_workers", 1), ("_use_multiprocessing", False), ("_max_queue_size", 10)):
            if not hasattr(self, name):
                setattr(self, name, default)
                missing = True
        if missing:
            warnings.warn(
                "Your `PyDataset` class should call `super().__init__(**kwargs)` in its constructor.",
                stacklevel=2,
            )

    @property
    def workers(self) -> Any:
        self._warn_if_super_not_called()
        return self._workers

    @workers.setter
    def workers(self, value: Any) -> None:
        self._workers = value

    @property
    def use_multiprocessing(self) -> Any:
        self._warn_if_super_not_called()
        return self._use_multiprocessing

    @use_multiprocessing.setter
    def use_multiprocessing(self, value: Any) -> None:
        self._use_multiprocessing = value

    @property
    def max_queue_size(self) -> Any:
        self._warn_if_super_not_called()
        return self._max_queue_size

    @max_queue_size.setter
    def max_queue_size(self, value: Any) -> None:
        self._max_queue_size = value

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        try:
            count = self.num_batches
        except NotImplementedError:
            count = None
        for index in range(count) if count is not None else itertools.count():
            yield self[index]

    @property
    def num_batches(self) -> int | None:
        if hasattr(self, "__len__"):
            return len(self)
        msg = "You need to implement the `num_batches` property:\n\n@property\ndef num_batches(self):\n  return ..."
        raise NotImplementedError(msg)

    def on_epoch_begin(self) -> None:
        pass

    def on_epoch_end(self) -> None:
        pass


_COVERED = frozenset(vars(PyDatasetStandIn)) | _BOOKKEEPING
_LIGHTABLE: weakref.WeakKeyDictionary[type, type | None] = weakref.WeakKeyDictionary()
_LIGHTABLE_LOCK = threading.Lock()


def _is_keras_base(cls: type) -> bool:
    try:
        key = (vars(cls).get("__module__"), cls.__qualname__)
    except Exception:  # an object that answers oddly: not a Keras base
        return False
    return key in _KERAS_BASES


def keras_base(cls: type) -> type | None:
    """The Keras base that a light copy of ``cls`` replaces, when ``cls`` is a user's class below it that a light
    copy can be made for; else None."""
    with _LIGHTABLE_LOCK:
        if cls in _LIGHTABLE:
            return _LIGHTABLE[cls]
    found = _find_base(cls)
    with _LIGHTABLE_LOCK:
        _LIGHTABLE[cls] = found
    return found


def _find_base(cls: type) -> type | None:
    if _is_keras_base(cls):
        return None
    try:
        mro = cls.__mro__
    except Exception:
        return None
    bases = [c for c in mro if _is_keras_base(c)]
    if len(bases) != 1:
        return None
    base = bases[0]
    # every Keras member must have its stand-in, and each user class below the base must be a plain class
    if set(vars(base)) - _COVERED - {name for name in vars(base) if name.startswith("_api_export")}:
        return None
    for c in mro:
        if c is base or not issubclass(c, base):
            continue
        if type(c) is not type or "__slots__" in vars(c) or vars(c).get("__module__") is None:
            return None
    return base


def light_reduce(cls: type, base: type) -> tuple[Any, ...]:
    """The pickle reduction of ``cls`` (a user's class below the Keras ``base``) as its light copy: rebuilt with
    the stand-in in place of ``base`` and its own namespace, set once the class exists (so its methods may
    refer to it, as ``super()`` does)."""
    bases = tuple(PyDatasetStandIn if b is base else b for b in cls.__bases__)
    namespace = {k: v for k, v in vars(cls).items() if k not in _NOT_COPIED}
    args = (cls.__name__, bases, vars(cls)["__module__"], cls.__qualname__)
    return (make_light_class, args, namespace, None, None, fill_light_class)


def make_light_class(name: str, bases: tuple[type, ...], module: str, qualname: str) -> type:
    """The empty light class, in the worker; its namespace follows (:func:`fill_light_class`)."""
    return type(name, bases, {"__module__": module, "__qualname__": qualname})


def fill_light_class(cls: type, namespace: dict[str, Any]) -> type:
    for name, value in namespace.items():
        setattr(cls, name, value)
    return cls


def user_module(cls: type) -> Any:
    """The module to pickle by value for a light copy of ``cls``: None for ``__main__`` (always by value) or a
    module this process does not hold."""
    name = vars(cls).get("__module__")
    if not isinstance(name, str) or name == "__main__":
        return None
    return sys.modules.get(name)
