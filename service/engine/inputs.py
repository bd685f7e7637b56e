"""Checking classification inputs against a package's input specification.

The manifest's ``input`` is ``{"type": "tokens"|"features", "size": R, "max_length": T_max}``.
Accepted sequences, each a *form* with a name (``input_format`` chooses one; ``auto`` goes by
the item):

- tokens: ``text``, a string (each character in the vocabulary), or ``ids``, a list of token
  ids in [0, R);
- features: ``sequence``, a list of feature vectors, each a list of R finite numbers; when
  R = 1 also a plain list of numbers (one per step);
- packages whose ``preprocessing`` declares an image (the digits and MNIST tasks) also take
  the raw ``image`` and ``pixels`` forms and prepare them on the server
  (:mod:`service.engine.preprocess`).

Every sequence has 1..T_max steps. Errors name the offending item as ``inputs[i]`` (and the
step and feature where it helps) and say what is accepted: every form and its shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from tlstm.contract import Manifest

from .errors import InvalidRequest
from .preprocess import AUTO, ImagePreprocessing, InputForm
from .vocab import Vocabulary


@dataclass(frozen=True)
class InputSpec:
    """A package's input specification (manifest ``input``) plus its vocabulary, if any, and
    the image its raw inputs are (feature packages whose ``preprocessing`` declares one)."""

    type: str
    size: int
    max_length: int
    vocab: Vocabulary | None = None
    image: ImagePreprocessing | None = None

    def __post_init__(self) -> None:
        if self.vocab is not None and not isinstance(self.vocab, Vocabulary):
            object.__setattr__(self, "vocab", Vocabulary(self.vocab))

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> InputSpec:
        spec = manifest.input
        image = None
        if spec.type == "features":
            image = ImagePreprocessing.from_manifest(manifest.preprocessing, spec.size, spec.max_length)
        return cls(type=spec.type, size=spec.size, max_length=spec.max_length,
                   vocab=Vocabulary(manifest.vocab) if manifest.vocab else None, image=image)

    @cached_property
    def forms(self) -> tuple[InputForm, ...]:
        """Every form an input may take (see the module docstring)."""
        steps = f"1 to {self.max_length}"
        if self.type == "tokens":
            return (
                InputForm("text", ("T",), None, f"a string of {steps} characters of the vocabulary"),
                InputForm("ids", ("T",), (0, self.size - 1), f"{steps} token ids in [0, {self.size})"),
            )
        if self.image is not None:
            return (*self.image.raw_forms(), self.image.sequence_form())
        return (InputForm("sequence", ("T", self.size), None, self.describe()),)

    def check_format(self, input_format: str) -> None:
        """Raise InvalidRequest unless ``input_format`` is ``auto`` or one of :attr:`forms`."""
        names = [form.name for form in self.forms]
        if input_format != AUTO and input_format not in names:
            accepted = ", ".join(repr(n) for n in [AUTO, *names])
            raise InvalidRequest(f"input_format: expected one of {accepted} for this model, got {input_format!r}",
                                 param="input_format")

    def describe(self) -> str:
        if self.type == "tokens":
            return f"a string or a list of token ids in [0, {self.size}), 1 to {self.max_length} steps"
        flat = " (or, with one feature, a list of numbers)" if self.size == 1 else ""
        return f"a list of feature vectors of {self.size} numbers{flat}, 1 to {self.max_length} steps"


def parse_input(item: Any, index: int, spec: InputSpec, input_format: str = AUTO) -> np.ndarray:
    """One sequence as an array: (T,) int64 for tokens, (T, R) float32 for features (raw
    forms already prepared as the package declares).

    Args:
        input_format: ``auto`` or the name of one of ``spec.forms`` (see
            :meth:`InputSpec.check_format`).

    Raises:
        InvalidRequest: naming ``inputs[index]`` and what is wrong.
    """
    where = f"inputs[{index}]"
    spec.check_format(input_format)
    if spec.type == "tokens":
        array = _tokens(item, where, spec, input_format)
    elif spec.image is not None:
        array = _image_or_features(item, where, spec, spec.image, input_format)
    else:
        array = _features(item, where, spec)
    length = array.shape[0]
    if not 1 <= length <= spec.max_length:
        raise InvalidRequest(
            f"{where}: expected 1 to {spec.max_length} steps, got {length}", param="inputs"
        )
    return array


def _tokens(item: Any, where: str, spec: InputSpec, input_format: str = AUTO) -> np.ndarray:
    if isinstance(item, str) and input_format in (AUTO, "text"):
        def unknown(char: str, position: int) -> InvalidRequest:
            return InvalidRequest(
                f"{where}: character {char!r} at position {position} is not in the model's vocabulary",
                param="inputs",
            )

        return (spec.vocab or Vocabulary(())).encode(item, unknown)
    if (isinstance(item, list) and input_format in (AUTO, "ids")
            and all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
        for step, value in enumerate(item):  # checked as Python ints: any size is refused cleanly
            if not 0 <= value < spec.size:
                raise InvalidRequest(
                    f"{where}: token id {value} at step {step} is outside [0, {spec.size})", param="inputs"
                )
        return np.asarray(item, dtype=np.int64).reshape(-1)
    if input_format != AUTO:
        form = next(f for f in spec.forms if f.name == input_format)
        raise InvalidRequest(f"{where}: expected the {form.name!r} form, {form.description}; got {_shape_of(item)}",
                             param="inputs")
    raise InvalidRequest(f"{where}: expected {spec.describe()}, got {_kind(item)}", param="inputs")


def _layout(item: Any) -> tuple[int, ...] | None:
    """The nesting of a list: (n,) with no list inside, (n, m) for n lists of m non-lists
    each, else None (the values themselves are checked once the form is known)."""
    if not isinstance(item, list):
        return None
    kinds = {type(v) for v in item}  # JSON gives exact lists, never subclasses
    if list not in kinds:
        return (len(item),)
    if kinds != {list} or list in {type(v) for row in item for v in row}:
        return None
    widths = {len(row) for row in item}
    return (len(item), widths.pop()) if len(widths) == 1 else None


def _fits(form: InputForm, layout: tuple[int, ...] | None, spec: InputSpec) -> bool:
    """Whether an item of ``layout`` has the shape of ``form``."""
    if layout is None:
        return False
    if form.name == "sequence":
        steps_ok = 1 <= layout[0] <= spec.max_length
        return steps_ok and (layout[1:] == (spec.size,) or (spec.size == 1 and len(layout) == 1))
    return layout == form.shape


def _image_or_features(item: Any, where: str, spec: InputSpec, image: ImagePreprocessing, input_format: str) -> np.ndarray:
    """An item of a package whose raw inputs are images (see :mod:`service.engine.preprocess`)."""
    layout = _layout(item)
    forms = {form.name: form for form in spec.forms}
    if input_format != AUTO:
        form = forms[input_format]
        if not _fits(form, layout, spec):
            raise InvalidRequest(f"{where}: expected the {form.name!r} form, {form.description}; got {_shape_of(item)}",
                                 param="inputs")
        fitting = [form.name]
    else:
        fitting = [name for name, form in forms.items() if _fits(form, layout, spec)]
        if not fitting:
            listed = "; ".join(f"{form.name!r}: {form.description}" for form in forms.values())
            raise InvalidRequest(f"{where}: expected one of the forms {listed}; got {_shape_of(item)}", param="inputs")
    name = fitting[0]
    grid = bool(item) and isinstance(item[0], list)
    values = _numbers(item if grid else [item])  # converted once, for the choice and the pixels
    bounds = (float(values.min()), float(values.max())) if values is not None and values.size else None
    if len(fitting) > 1:  # a raw form and the sequence share the shape: the values decide
        name = "sequence" if bounds is not None and bounds[0] >= 0 and bounds[1] <= 1 else fitting[0]
    if name == "sequence":
        return _features(item, where, spec)
    if values is not None and bounds is not None and bounds[0] >= 0 and bounds[1] <= image.divisor:  # nan fails
        return image.prepare(values.astype(np.float32) if grid else values.astype(np.float32).reshape(-1))
    return image.prepare(_raw_pixels(item, where, image))


def _raw_pixels(item: list[Any], where: str, image: ImagePreprocessing) -> np.ndarray:
    """Check raw pixel values (finite, in [0, divisor]) one by one; (H, W) or (H*W,) float32."""
    top = image.divisor
    grid = bool(item) and isinstance(item[0], list)
    rows = item if grid else [item]
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if not (_is_number(value) and math.isfinite(value) and 0 <= value <= top):
                at = f"{where}[{r}][{c}]" if grid else f"{where}[{c}]"
                raise InvalidRequest(f"{at}: expected a pixel value in [0, {top:g}], got {value!r}", param="inputs")
    return np.asarray(item, dtype=np.float32)


def _features(item: Any, where: str, spec: InputSpec) -> np.ndarray:
    if not isinstance(item, list):
        raise InvalidRequest(f"{where}: expected {spec.describe()}, got {_kind(item)}", param="inputs")
    if spec.size == 1 and all(_is_number(v) for v in item):
        item = [[v] for v in item]
    if item and all(isinstance(row, list) and len(row) == spec.size for row in item):
        fast = _numbers(item)
        if fast is not None and np.abs(fast).max() <= FLOAT32_MAX:  # false for inf and nan too
            return fast.astype(np.float32).reshape(len(item), spec.size)
    for step, row in enumerate(item):  # find and name the first bad value
        if not isinstance(row, list) or len(row) != spec.size:
            got = f"{len(row)} numbers" if isinstance(row, list) else _kind(row)
            raise InvalidRequest(
                f"{where}[{step}]: expected a feature vector of {spec.size} numbers, got {got}",
                param="inputs",
            )
        for feature, value in enumerate(row):
            if not _is_number(value) or not _is_finite(value):
                raise InvalidRequest(
                    f"{where}[{step}][{feature}]: expected a finite number, got {value!r}",
                    param="inputs",
                )
            if not _is_float32(value):
                raise InvalidRequest(
                    f"{where}[{step}][{feature}]: expected a number within float32's range "
                    f"(|x| <= {FLOAT32_MAX:.4g}), got {value!r}",
                    param="inputs",
                )
    return np.asarray(item, dtype=np.float32).reshape(len(item), spec.size)


NUMBER_TYPES = frozenset((int, float))


def _numbers(rows: list[list[Any]]) -> np.ndarray | None:
    """Rows of plain ints and floats (no bools, no strings) as float64, in one numpy call;
    None when any value is something else or too large for float64 (the caller's per-value
    checks then name it)."""
    if not {type(v) for row in rows for v in row} <= NUMBER_TYPES:
        return None
    try:
        return np.asarray(rows, dtype=np.float64)
    except (OverflowError, ValueError):
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_finite(value: int | float) -> bool:
    """Not inf or nan (a Python int is always finite, whatever its size)."""
    return isinstance(value, int) or math.isfinite(value)


def _is_float32(value: int | float) -> bool:
    """A finite number that float32 holds without overflow (an int of any size is fine to ask)."""
    try:
        number = float(value)
    except OverflowError:
        return False
    return math.isfinite(number) and abs(number) <= FLOAT32_MAX


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return type(value).__name__ if value is not None else "null"


def _shape_of(value: Any) -> str:
    """What an item looks like, for the errors that list the forms."""
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        widths = sorted({len(v) for v in value})
        width = str(widths[0]) if len(widths) == 1 else f"{widths[0]} to {widths[-1]}"
        return f"a list of {len(value)} lists of {width} items"
    if isinstance(value, list) and value and all(_is_number(v) for v in value):
        return f"a list of {len(value)} numbers"
    return _kind(value)


def pad_batch(sequences: Sequence[np.ndarray], spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad sequences to one batch.

    Returns:
        x: (B, T) int64 or (B, T, R) float32, padded with zeros (the graph feeds padded
        positions the flush input; their values never reach an output); lengths: (B,) int64.
    """
    lengths = np.array([s.shape[0] for s in sequences], dtype=np.int64)
    longest = int(lengths.max())
    if spec.type == "tokens":
        x = np.zeros((len(sequences), longest), dtype=np.int64)
    else:
        x = np.zeros((len(sequences), longest, spec.size), dtype=np.float32)
    for row, seq in enumerate(sequences):
        x[row, : seq.shape[0]] = seq
    return x, lengths
