"""Worker-side sources for test_worker_lifecycle.py (TF-free: worker processes unpickle them by reference)."""

from __future__ import annotations

import os
import random
import time

import numpy as np

_LEAKED: list[bytes] = []  # what Leaks keeps, in whichever process makes its elements
_MIB = 2**20


def own_rss_bytes() -> int:
    """Resident memory less shared pages, as the worker measures it for max_worker_rss."""
    with open("/proc/self/statm", "rb") as f:
        fields = f.read().split()
    return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")


class Augmented:
    """Each element: its index, then draws from numpy's global RNG and Python's ``random`` (a random
    augmentation). Some elements take longer, so which worker makes which element varies."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        if i % 7 == 0:
            time.sleep(0.002)
        return np.array([i, np.random.random(), np.random.normal(), random.random(), random.randint(0, 2**30)])


class Leaks:
    """Keeps ``mib`` MiB per element in a global list (a leak), and says which process made the element and how
    much memory of its own that process held just after: ``[index, pid, bytes]``."""

    def __init__(self, n: int, mib: int = 1) -> None:
        self.n, self.mib = n, mib

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        _LEAKED.append(b"\x01" * (self.mib * _MIB))  # written, so resident
        return np.array([i, os.getpid(), own_rss_bytes()], np.int64)


class InheritableFds:
    """Each element: its index, then how many descriptors (beyond stdin, stdout and stderr) a process the source
    started would inherit."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        fds = []
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            try:
                if fd > 2 and os.get_inheritable(fd):
                    fds.append(fd)
            except OSError:  # the listing's own descriptor, closed by now
                continue
        return np.array([i, len(fds)], np.int64)
