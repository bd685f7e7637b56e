"""Text corpora that every machine with Python holds, so none needs a download.

* ``docstrings`` (the ``chars`` task's default): the docstrings of the running Python's
  standard library;
* ``python-docs``: the language reference that ships with Python (``pydoc_data.topics``, the
  text ``help()`` shows), then the docstrings. It is a quarter larger and more of it is
  English prose; the shipped ``chars`` model trains on it.

Docstrings: Collection is deterministic for
a given Python installation: files in sorted relative-path order, docstrings in source order
(module, then classes and functions as they appear), parsed with :mod:`ast` (nothing is
imported). Test suites, ``site-packages`` and docstrings with characters outside printable
ASCII are left out, so the vocabulary is at most the 95 printable ASCII characters and the
newline. The text differs between Python versions; :func:`corpus_fingerprint` names it.

The reference: its topics in sorted name order, each stripped and joined by blank lines, with
the typographic punctuation it uses mapped to ASCII (curly quotes to straight ones, dashes to
``-`` and ``--``, the ellipsis to ``...``) and any topic still outside printable ASCII left out.
"""

from __future__ import annotations

import ast
import hashlib
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
SEPARATOR = "\n\n"
_PRINTABLE = frozenset(chr(c) for c in range(32, 127)) | {"\n"}


def stdlib_dir() -> Path:
    """The directory holding the running interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _source_files(root: Path) -> list[Path]:
    files = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if not SKIPPED_DIRS.intersection(parts[:-1]):
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _docstrings(tree: ast.AST) -> Iterator[str]:
    """Docstrings of a module and its classes and functions, in source order."""
    if isinstance(tree, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        doc = ast.get_docstring(tree, clean=True)
        if doc:
            yield doc
    for child in ast.iter_child_nodes(tree):
        yield from _docstrings(child)


def _is_plain(text: str) -> bool:
    return all(ch in _PRINTABLE for ch in text)


def collect_docstrings(root: Path | None = None) -> str:
    """All plain-ASCII docstrings under ``root`` (default: :func:`stdlib_dir`), joined by blank lines.

    Raises:
        ValueError: ``root`` holds no Python source with docstrings.
    """
    root = stdlib_dir() if root is None else Path(root)
    pieces: list[str] = []
    for path in _source_files(root):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, UnicodeDecodeError):
            continue  # the standard library ships a few deliberately broken files
        pieces.extend(doc for doc in _docstrings(tree) if _is_plain(doc))
    if not pieces:
        raise ValueError(f"no Python docstrings found under {root}; expected a standard library directory")
    return SEPARATOR.join(pieces) + "\n"


_ASCII_PUNCTUATION = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                                    "\u2013": "-", "\u2014": "--", "\u2026": "..."})
CORPORA = ("docstrings", "python-docs")


def collect_reference() -> str:
    """The Python language reference's help topics (``pydoc_data.topics``) as plain ASCII text.

    Raises:
        ValueError: this Python ships no ``pydoc_data`` (some distributions split it off).
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:
        raise ValueError("this Python has no pydoc_data.topics (the language reference's help text); "
                         "expected a full standard library, or use the 'docstrings' corpus") from exc
    pieces = [text.strip().translate(_ASCII_PUNCTUATION) for _, text in sorted(topics.items())]
    return SEPARATOR.join(p for p in pieces if p and _is_plain(p)) + "\n"


def collect(name: str) -> str:
    """The corpus called ``name`` (one of :data:`CORPORA`).

    Raises:
        ValueError: an unknown name, or the corpus is missing from this Python.
    """
    if name == "docstrings":
        return collect_docstrings()
    if name == "python-docs":
        return SEPARATOR.join([collect_reference().rstrip("\n"), collect_docstrings()])
    raise ValueError(f"corpus: expected one of {list(CORPORA)}, got {name!r}")


def corpus_fingerprint(text: str) -> str:
    """``sha256:<hex>`` of the corpus text (UTF-8), recorded in checkpoints."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def python_version() -> str:
    return ".".join(str(v) for v in sys.version_info[:3])
