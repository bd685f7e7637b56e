"""``chars``: character language modelling on any text or byte file.

Data, in order of precedence:

* no path: a corpus of the running Python (:mod:`training.corpus`), modelled as characters:
  by default its standard library's docstrings, or with ``corpus=python-docs`` its language
  reference followed by them;
* a file of exactly 100,000,000 bytes: enwik8 (the Hutter Prize file), modelled as bytes and
  split 90M/5M/5M as in the paper; its vocabulary is the byte values it contains (205);
* any other file: modelled as characters when it is valid UTF-8, else as bytes, split
  90%/5%/5% in file order;
* ``uniform=K`` instead of a path: an i.i.d. uniform stream of the first K base64 symbols,
  200,000 of them drawn from a fixed seed, split 90%/5%/5%. Its entropy is exactly
  log2 K bits per symbol, which no causal model can beat on held-out data: the control for a
  model that reads the future (docs/reproduction.md, "LN reads the future").

Vocabulary entries are one-character strings: the character itself, or for byte models the
byte's Latin-1 character ``chr(b)`` (``settings["encoding"] == "bytes"`` says which).
Token ids follow the sorted order of the symbols present.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from ..corpus import CORPORA, collect, corpus_fingerprint, python_version
from .base import DataError
from .lm import LanguageModelTask
from .memorization import ALPHABET

ENWIK8_BYTES = 100_000_000
ENWIK8_SPLIT = (90_000_000, 5_000_000, 5_000_000)
FILE_FRACTIONS = (0.90, 0.05)  # train, valid; the rest is test
MIN_SYMBOLS = 100
DEFAULT_BPTT = 100

UNIFORM_SYMBOLS = 200_000
UNIFORM_SEED = 20171204  # the paper's conference week; any fixed seed would do

OPTIONS = ("data", "corpus", "uniform", "encoding", "bptt")  # the command-line options that build() takes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("chars task")
    group.add_argument("--data", default=None, metavar="PATH",
                       help="text or byte file (enwik8 recognised by its size); default: the Python "
                            "standard library's docstrings")
    group.add_argument("--corpus", choices=list(CORPORA), default="docstrings",
                       help="without --data: the Python corpus (docstrings, or python-docs: the language "
                            "reference and the docstrings)")
    group.add_argument("--uniform", type=int, default=None, metavar="K",
                       help="instead of --data: an i.i.d. uniform stream of K symbols (entropy log2 K bits)")
    group.add_argument("--encoding", choices=["auto", "chars", "bytes"], default="auto",
                       help="model characters or bytes; auto: characters for UTF-8 text, bytes otherwise")
    group.add_argument("--bptt", type=int, default=DEFAULT_BPTT,
                       help="truncated backpropagation length (segment steps)")


def split_sizes(total: int, enwik8: bool) -> tuple[int, int, int]:
    """(train, valid, test) symbol counts: 90M/5M/5M for enwik8, else 90%/5%/5%."""
    if enwik8:
        return ENWIK8_SPLIT
    train = int(total * FILE_FRACTIONS[0])
    valid = int(total * FILE_FRACTIONS[1])
    return train, valid, total - train - valid


def _split(ids: np.ndarray, enwik8: bool) -> dict[str, np.ndarray]:
    train, valid, _ = split_sizes(len(ids), enwik8)
    return {"train": ids[:train], "valid": ids[train : train + valid], "test": ids[train + valid :]}


def _encode_bytes(raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(N,) uint8 -> (ids (N,) uint8 in sorted byte order, vocab of chr(byte))."""
    present = np.flatnonzero(np.bincount(raw, minlength=256))
    table = np.zeros(256, dtype=np.uint8)
    table[present] = np.arange(len(present), dtype=np.uint8)
    return table[raw], [chr(int(b)) for b in present]


def _encode_chars(text: str) -> tuple[np.ndarray, list[str]]:
    """A string -> (ids in sorted code-point order, vocab of characters)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    present, ids = np.unique(codes, return_inverse=True)
    dtype = np.uint8 if len(present) <= 256 else np.int32
    return ids.astype(dtype), [chr(int(c)) for c in present]


def uniform_stream(symbols: int) -> tuple[dict[str, np.ndarray], list[str], dict[str, Any]]:
    """The i.i.d. uniform stream of ``symbols`` symbols: (splits, vocab, settings describing it)."""
    if isinstance(symbols, bool) or not isinstance(symbols, int) or not 2 <= symbols <= len(ALPHABET):
        raise ValueError(f"uniform: expected a number of symbols from 2 to {len(ALPHABET)}, got {symbols!r}")
    ids = np.random.default_rng(UNIFORM_SEED).integers(0, symbols, size=UNIFORM_SYMBOLS).astype(np.uint8)
    source = {"corpus": "uniform", "symbols": symbols, "seed": UNIFORM_SEED, "encoding": "chars",
              "entropy_bits": float(np.log2(symbols)), "fingerprint": "sha256:" + hashlib.sha256(ids.data).hexdigest()}
    return _split(ids, enwik8=False), list(ALPHABET[:symbols]), source


CORPUS_LABELS = {"docstrings": "python-stdlib-docstrings", "python-docs": "python-reference-and-docstrings"}


def load(data: str | None, encoding: str = "auto", corpus: str = "docstrings") -> tuple[dict[str, np.ndarray], list[str], dict[str, Any]]:
    """Read and split the data (a file, else the named Python corpus); returns (splits, vocab, settings describing the source).

    Raises:
        DataError: missing, empty, too short or undecodable file.
        ValueError: an unknown encoding or corpus.
    """
    if encoding not in ("auto", "chars", "bytes"):
        raise ValueError(f"encoding: expected one of ['auto', 'chars', 'bytes'], got {encoding!r}")
    if corpus not in CORPORA:
        raise ValueError(f"corpus: expected one of {list(CORPORA)}, got {corpus!r}")
    if data is None:
        if encoding == "bytes":
            raise ValueError("encoding: the Python corpora are modelled as characters; expected 'auto' or 'chars'")
        text = collect(corpus)
        ids, vocab = _encode_chars(text)
        source = {"corpus": CORPUS_LABELS[corpus], "python": python_version(),
                  "fingerprint": corpus_fingerprint(text), "encoding": "chars"}
        return _split(ids, enwik8=False), vocab, source
    if corpus != "docstrings":
        raise ValueError(f"data {data!r} and corpus {corpus!r}: expected one source, a file or a Python corpus")
    path = Path(data)
    if not path.is_file():
        raise DataError(f"--data {path}: no such file; expected a text or byte file (e.g. enwik8)")
    raw = np.fromfile(path, dtype=np.uint8)
    if len(raw) < MIN_SYMBOLS:
        raise DataError(f"--data {path}: {len(raw)} bytes; expected at least {MIN_SYMBOLS} to split 90/5/5")
    enwik8 = len(raw) == ENWIK8_BYTES
    fingerprint = "sha256:" + hashlib.sha256(raw.data).hexdigest()
    if encoding == "auto":
        encoding = "bytes" if enwik8 else "chars"
        if encoding == "chars":
            try:
                raw.tobytes().decode("utf-8")
            except UnicodeDecodeError:
                encoding = "bytes"
    if encoding == "bytes":
        ids, vocab = _encode_bytes(raw)
    else:
        try:
            text = raw.tobytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"--data {path}: not valid UTF-8 ({exc}); use --encoding bytes") from exc
        ids, vocab = _encode_chars(text)
        if len(ids) < MIN_SYMBOLS:
            raise DataError(f"--data {path}: {len(ids)} characters; expected at least {MIN_SYMBOLS}")
    source = {"corpus": "enwik8" if enwik8 else "file", "path": str(path), "fingerprint": fingerprint, "encoding": encoding}
    return _split(ids, enwik8), vocab, source


class CharsTask(LanguageModelTask):
    name = "chars"

    def __init__(self, data: str | None = None, encoding: str = "auto", bptt: int = DEFAULT_BPTT,
                 uniform: int | None = None, corpus: str = "docstrings") -> None:
        if uniform is not None and data is not None:
            raise ValueError(f"data {data!r} and uniform {uniform!r}: expected one source, a file or the uniform stream")
        if uniform is not None and corpus != "docstrings":
            raise ValueError(f"corpus {corpus!r} and uniform {uniform!r}: expected one source, a Python corpus or the uniform stream")
        if uniform is not None and encoding not in ("auto", "chars"):
            raise ValueError(f"encoding: the uniform stream is modelled as characters; expected 'auto' or 'chars', got {encoding!r}")
        splits, vocab, info = uniform_stream(uniform) if uniform is not None else load(data, encoding, corpus)
        settings = {"data": data, "encoding": info["encoding"], "bptt": bptt}
        if corpus != "docstrings":
            settings["corpus"] = corpus
        if uniform is not None:
            settings["uniform"] = uniform
        super().__init__(splits, vocab, bptt, settings)
        self.info = info


def build(options: dict[str, Any]) -> CharsTask:
    return CharsTask(**options)
