"""Raw inputs, prepared on the server exactly as the package's training task prepared its data.

A package's manifest records under ``preprocessing`` how its training task turned the data
into the model's input (the task's ``info``, kept in the checkpoint and copied by the
exporter). For the image classifiers (the ``digits`` and ``mnist`` tasks) it is::

    {"image_shape": [H, W], "scale": s, "step": "row" | "pixel", "permutation": [H*W ids] | null}

and an image of raw pixel values (0 to 1/s: 0..16 for scikit-learn's 8x8 digits, 0..255 for
MNIST) becomes the model's (T, R) input as ``training.tasks.classification.to_sequences`` does
it: the values are divided by 1/s in float32 (the tasks divide by 16.0 and 255.0, so the
division, not a multiplication by s, gives the same float32 numbers); the H*W pixels, row by
row, are reordered by the permutation when there is one (``flat[permutation]``: permuted
MNIST); and they are read one row per step (T = H, R = W) or one pixel per step (T = H*W,
R = 1).

Such a package accepts each input in one of three forms (:class:`InputForm`):

- ``image``: H rows of W raw pixel values in [0, 1/s];
- ``pixels``: the H*W raw pixel values in one list, row by row (as MNIST's IDX files and
  ``load_digits().data`` hold them);
- ``sequence``: the model's own input, already prepared: 1 to T steps of R numbers (with
  R = 1 also 1 to T plain numbers).

A request names the form with ``input_format``, or leaves it ``auto``: the shape decides. Two
forms can share a shape: an H x W grid is an ``image`` and, read one row per step, a
``sequence``; H*W plain numbers are ``pixels`` and, read one pixel per step, a ``sequence``.
Such an item is the ``sequence`` when every value lies in [0, 1] (what the model's input holds,
and what the item meant before raw inputs were accepted) and the raw form otherwise.

Packages of other tasks declare no image; their inputs have the forms ``sequence`` (feature
models) or ``text`` and ``ids`` (token models), as before.

Shapes: H, W image height and width; T steps; R features per step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlstm.contract import PackageError

STEPS = ("row", "pixel")
AUTO = "auto"


@dataclass(frozen=True)
class InputForm:
    """One way a model's input may be sent.

    Attributes:
        name: ``image``, ``pixels``, ``sequence``, ``text`` or ``ids``.
        shape: the shape of one item, ints for fixed sizes and ``"T"`` for the number of steps.
        values: the range of the numbers (None for text and ids).
        description: what the item is, in words (error messages and the model card).
    """

    name: str
    shape: tuple[int | str, ...]
    values: tuple[float, float] | None
    description: str

    def card(self) -> dict[str, Any]:
        """The form as the model card lists it."""
        return {"name": self.name, "shape": list(self.shape),
                "range": list(self.values) if self.values is not None else None,
                "description": self.description}


def _number(value: float) -> str:
    """16.0 -> '16'; 0.5 -> '0.5'."""
    return f"{value:g}"


@dataclass(frozen=True)
class ImagePreprocessing:
    """How an image becomes the model's input (see the module docstring).

    Attributes:
        height, width: H and W of the raw image.
        divisor: 1/s, what raw values are divided by (16, 255); the largest raw value.
        step: ``"row"`` (T = H, R = W) or ``"pixel"`` (T = H*W, R = 1).
        permutation: the pixel order the model reads, (H*W,) int64, or None.
    """

    height: int
    width: int
    divisor: float
    step: str
    permutation: np.ndarray | None = None

    @classmethod
    def from_manifest(cls, preprocessing: Mapping[str, Any], size: int, max_length: int,
                      where: str = "manifest.json") -> ImagePreprocessing | None:
        """The image preprocessing a manifest declares, or None when it declares no image.

        Args:
            preprocessing: the manifest's ``preprocessing`` entry.
            size, max_length: R and T of the package's feature input.

        Raises:
            PackageError: the entry is malformed or does not match the package's input.
        """
        if "image_shape" not in preprocessing:
            return None
        at = f"{where}: preprocessing"
        shape = preprocessing["image_shape"]
        if not (isinstance(shape, list) and len(shape) == 2
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
            raise PackageError(f"{at}.image_shape: expected [height, width] of positive ints, got {shape!r}")
        height, width = shape
        scale = preprocessing.get("scale")
        if not (isinstance(scale, int | float) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0):
            raise PackageError(f"{at}.scale: expected a positive number, got {scale!r}")
        step = preprocessing.get("step")
        if step not in STEPS:
            raise PackageError(f"{at}.step: expected one of {list(STEPS)}, got {step!r}")
        permutation = preprocessing.get("permutation")
        order = None
        if permutation is not None:
            pixels = height * width
            if not (isinstance(permutation, list) and sorted(permutation) == list(range(pixels))):
                raise PackageError(f"{at}.permutation: expected a permutation of 0..{pixels - 1} or null")
            order = np.asarray(permutation, dtype=np.int64)
        expected = (width, height) if step == "row" else (1, height * width)
        if (size, max_length) != expected:
            raise PackageError(
                f"{at}: an image of {height} x {width} read one {step} per step is {expected[1]} steps of "
                f"{expected[0]} features, but the package's input is {max_length} steps of {size}"
            )
        divisor = 1.0 / scale
        if abs(divisor - round(divisor)) <= 1e-9 * divisor:  # 1 / (1/255) = 255.00000000000003
            divisor = float(round(divisor))
        return cls(height, width, divisor, step, order)

    # -------------------------------------------------------------- sizes
    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def steps(self) -> int:
        """T: steps the model reads for one image."""
        return self.height if self.step == "row" else self.pixels

    @property
    def features(self) -> int:
        """R: numbers per step."""
        return self.width if self.step == "row" else 1

    # -------------------------------------------------------------- forms
    def raw_forms(self) -> tuple[InputForm, InputForm]:
        """The ``image`` and ``pixels`` forms."""
        values = (0.0, self.divisor)
        in_range = f"pixel values in [0, {_number(self.divisor)}]"
        return (
            InputForm("image", (self.height, self.width), values, f"{self.height} x {self.width} {in_range}"),
            InputForm("pixels", (self.pixels,), values, f"{self.pixels} {in_range}, row by row"),
        )

    def sequence_form(self) -> InputForm:
        """The model's own form, described by how an image becomes it."""
        how = [f"pixel / {_number(self.divisor)}"]
        if self.permutation is not None:
            how.append("pixels permuted")
        how.append(f"one {self.step} per step")
        per_step = f"{self.features} numbers" if self.features > 1 else "1 number"
        plain = f" (or 1 to {self.steps} numbers)" if self.features == 1 else ""
        return InputForm(
            "sequence", ("T", self.features), (0.0, 1.0),
            f"1 to {self.steps} steps of {per_step}{plain}: the model's input ({', '.join(how)})",
        )

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Raw pixel values, (H, W) or (H*W,), -> the model's input (T, R) float32."""
        flat = np.asarray(image, dtype=np.float32).reshape(self.pixels) / np.float32(self.divisor)
        if self.permutation is not None:
            flat = flat[self.permutation]
        return np.ascontiguousarray(flat.reshape(self.steps, self.features))
