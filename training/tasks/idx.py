"""Reading IDX files, the format of the MNIST distribution (optionally gzip-compressed).

Layout: two zero bytes, a type code, the number of dimensions n, then n big-endian uint32
sizes, then the data in C order, big-endian. Every deviation raises :class:`DataError`
naming the file and the problem.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

import numpy as np

from .base import DataError

TYPES: dict[int, np.dtype[Any]] = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` names are decompressed).

    Raises:
        DataError: unreadable file, bad magic number, unknown type code, or a size mismatch.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (expected the magic bytes 00 00 <type> <ndim>)")
    code, ndim = raw[2], raw[3]
    if code not in TYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x}; expected one of {[hex(c) for c in TYPES]}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({ndim} dimensions, {len(raw)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = TYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: the header promises shape {shape} ({expected} data bytes), the file holds "
            f"{len(raw) - header} data bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (uint8, int8, int16, int32, float32 or float64)."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in TYPES.items()}
    dtype = array.dtype.newbyteorder("=")
    if dtype not in codes:
        raise ValueError(f"write_idx: unsupported dtype {array.dtype}; expected one of {sorted(map(str, codes))}")
    header = bytes([0, 0, codes[dtype], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(array).astype(TYPES[codes[dtype]]).tobytes()
    Path(path).write_bytes(gzip.compress(data) if Path(path).suffix == ".gz" else data)
