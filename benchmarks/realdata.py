"""The data and per-item work of the real workloads (benchmarks/real.py, benchmarks/gpu.py): JPEG files decoded
and augmented with Pillow, and sentences tokenised in pure Python.

Light on purpose (numpy, Pillow and the standard library only): worker processes that unpickle these functions
(grain's spawned workers, tfbridge's process executor) import this module and nothing heavier. The Keras
``PyDataset`` forms live in benchmarks/realkeras.py, which imports Keras.
"""

from __future__ import annotations

import os
import re
import unicodedata
from typing import Any

import numpy as np

BATCH = 32
CROP = 224  # images are stored at SIDE x SIDE and randomly cropped to CROP x CROP
SIDE = 256
LENGTH = 1_000_000  # batches in one nominal epoch: no timed window reaches its end


# -- (a) images ------------------------------------------------------------------------------------------------


def write_jpegs(directory: str, count: int, seed: int = 0) -> list[str]:
    """``count`` SIDE x SIDE RGB JPEGs (smooth colour fields with noise, about 25 KB each) in ``directory``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    paths = []
    for i in range(count):
        fx, fy = rng.uniform(4, 40, 2)
        tint = rng.uniform(0.4, 1.0, 3).astype(np.float32)
        field = (np.sin(xx / fx) * 60 + np.cos(yy / fy) * 60 + 128)[..., None] * tint
        noise = rng.normal(0, 12, (SIDE, SIDE, 3)).astype(np.float32)
        pixels = np.clip(field + noise, 0, 255).astype(np.uint8)
        path = os.path.join(directory, f"img{i:05d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def augment_into(out: np.ndarray, path: str, rng: np.random.Generator) -> None:
    """Decode the JPEG at ``path``, crop a random CROP x CROP window, flip it left-right half of the time and
    write it to ``out`` (float32[CROP, CROP, 3]) scaled to [-1, 1]."""
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    top, left = rng.integers(0, pixels.shape[0] - CROP + 1), rng.integers(0, pixels.shape[1] - CROP + 1)
    window = pixels[top : top + CROP, left : left + CROP]
    if rng.random() < 0.5:
        window = window[:, ::-1]
    np.multiply(window, np.float32(1 / 127.5), out=out, casting="unsafe")
    out -= np.float32(1.0)


def image_label(index: int) -> int:
    return index % 10


def image_batch(paths: list[str], index: int, batch: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Batch ``index``: images ``index * batch ...`` (cycling over ``paths``), augmented, and their labels."""
    rng = np.random.default_rng(index)
    x = np.empty((batch, CROP, CROP, 3), np.float32)
    first = index * batch
    for k in range(batch):
        augment_into(x[k], paths[(first + k) % len(paths)], rng)
    y = np.array([image_label(first + k) for k in range(batch)], np.int32)
    return x, y


class LoadImage:
    """grain's per-image map: element ``i`` (an index) -> (float32[CROP, CROP, 3], int32 label)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __call__(self, index: Any) -> tuple[np.ndarray, np.int32]:
        i = int(index)
        out = np.empty((CROP, CROP, 3), np.float32)
        augment_into(out, self.paths[i % len(self.paths)], np.random.default_rng(i))
        return out, np.int32(image_label(i))


# -- (b) text --------------------------------------------------------------------------------------------------

_SYLLABLES = [
    "ka", "lo", "mi", "ter", "an", "sol", "ri", "ven", "do", "pra", "el", "us", "ion", "mor", "tas", "be", "ni",
    "qua", "str", "ed", "ing", "al", "com", "pe", "ro", "fi", "na", "ly", "th", "ge", "vo", "ra", "su", "dis",
    "min", "ex", "pl", "or", "tu"
]  # fmt: skip
_WORD = re.compile(r"\w+|[^\w\s]")
PAD, UNK, CLS, SEP = 0, 1, 2, 3
MAX_TOKENS = 256


def make_sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` sentences of made-up words: Zipf-distributed words, lengths lognormal (median 16 words)."""
    rng = np.random.default_rng(seed)
    pool = ["".join(rng.choice(_SYLLABLES, rng.integers(1, 5))) for _ in range(8000)]
    lengths = np.clip(rng.lognormal(np.log(16), 0.7, count), 2, 160).astype(int)
    ranks = np.minimum(rng.zipf(1.2, int(lengths.sum())), len(pool)) - 1
    out, at = [], 0
    for n in lengths:
        words = [pool[r] for r in ranks[at : at + n]]
        at += n
        for k in rng.integers(1, max(n, 2), n // 8):
            words[k] += ","
        words[0] = words[0].capitalize()
        if rng.random() < 0.2:
            words[-1] = words[-1].replace("e", "\u00e9", 1)
        out.append(" ".join(words) + ".")
    return out


def make_vocab(sentences: list[str], whole_words: int = 3000) -> dict[str, int]:
    """The ``whole_words`` commonest words, then word pieces (syllables and letters, "##" inside a word)."""
    counts: dict[str, int] = {}
    for sentence in sentences[:5000]:
        for word in _WORD.findall(sentence.lower()):
            counts[word] = counts.get(word, 0) + 1
    vocab = {"[PAD]": PAD, "[UNK]": UNK, "[CLS]": CLS, "[SEP]": SEP}
    for word in sorted(counts, key=lambda w: (-counts[w], w))[:whole_words]:
        vocab.setdefault(word, len(vocab))
    for piece in _SYLLABLES + [chr(c) for c in range(ord("a"), ord("z") + 1)]:
        vocab.setdefault(piece, len(vocab))
        vocab.setdefault("##" + piece, len(vocab))
    return vocab


class Tokenizer:
    """Pure-Python word-piece tokenisation, as BERT-style tokenisers do it: clean and strip accents character by
    character, split words and punctuation, then whole words from the vocabulary, else the longest pieces first."""

    longest_piece = 3

    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab

    def __call__(self, text: str) -> np.ndarray:
        vocab, ids = self.vocab, [CLS]
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn" and (c.isprintable() or c.isspace()))
        for word in _WORD.findall(text):
            found = vocab.get(word)
            if found is not None:
                ids.append(found)
                continue
            start = 0
            while start < len(word):
                end = min(len(word), start + self.longest_piece)
                while end > start:
                    found = vocab.get(word[start:end] if start == 0 else "##" + word[start:end])
                    if found is not None:
                        break
                    end -= 1
                if found is None:
                    ids.append(UNK)
                    break
                ids.append(found)
                start = end
        ids.append(SEP)
        return np.asarray(ids[:MAX_TOKENS], np.int32)


class Corpus:
    """Sentences and their tokeniser, made once per process (outside any timing)."""

    def __init__(self, count: int) -> None:
        self.sentences = make_sentences(count)
        self.tokenize = Tokenizer(make_vocab(self.sentences))

    def example(self, index: int) -> tuple[np.ndarray, np.int32]:
        """Example ``index`` (cycling over the sentences): (int32 token ids, int32 label)."""
        i = index % len(self.sentences)
        return self.tokenize(self.sentences[i]), np.int32(i % 2)


class Sentences:
    """(b) as tfbridge takes it: an indexed source of single examples, tokenised on each call."""

    def __init__(self, corpus: Corpus, length: int = LENGTH * BATCH) -> None:
        self.corpus, self.length = corpus, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int32]:
        return self.corpus.example(index)


def pad_examples(examples: list[tuple[np.ndarray, np.int32]]) -> tuple[np.ndarray, np.ndarray]:
    """A batch of examples: ids padded with PAD to the batch's longest, labels stacked."""
    ids = np.zeros((len(examples), max(len(e[0]) for e in examples)), np.int32)
    for row, (tokens, _) in zip(ids, examples, strict=True):
        row[: len(tokens)] = tokens
    return ids, np.array([e[1] for e in examples], np.int32)


def sentence_batch(corpus: Corpus, index: int, batch: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Batch ``index`` of examples, padded to its longest (what a Keras PyDataset's __getitem__ returns)."""
    return pad_examples([corpus.example(index * batch + k) for k in range(batch)])


class Tokenize:
    """grain's per-example map: element ``i`` (an index) -> (int32 token ids, int32 label)."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus

    def __call__(self, index: Any) -> tuple[np.ndarray, np.int32]:
        return self.corpus.example(int(index))
