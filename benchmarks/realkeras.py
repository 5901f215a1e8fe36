"""The real workloads as Keras ``PyDataset`` s (one batch per ``__getitem__``), for tfbridge and for Keras's own
workers. Kept apart from benchmarks/realdata.py because defining them imports Keras."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import realdata


class JpegBatches(keras.utils.PyDataset):  # type: ignore[misc]
    """(a): batch ``i`` decodes 32 JPEGs with Pillow, random-crops 224x224, flips and scales to float32."""

    def __init__(self, paths: list[str], length: int = realdata.LENGTH, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.paths, self.length = paths, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return realdata.image_batch(self.paths, index)


class SentenceBatches(keras.utils.PyDataset):  # type: ignore[misc]
    """(b) as a Keras user writes it: batch ``i`` tokenises 32 sentences and pads them to the longest."""

    def __init__(self, corpus: realdata.Corpus, length: int = realdata.LENGTH, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.corpus, self.length = corpus, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return realdata.sentence_batch(self.corpus, index)
