"""State tokens: a stream's whole decoding state, signed, so that any replica continues it exactly.

A tLSTM's decoding state is a few kilobytes and does not grow with the text. A
:class:`Snapshot` holds all that continuing needs; :class:`StateCodec` turns it into a token
a client can carry, and back. The engine makes and reads snapshots (``GenerationStream.snapshot``,
``GenerationEngine.resume``, ``PredictionSession.snapshot``/``restore``); the HTTP layer only
passes tokens through and maps :class:`StateTokenError` to a 400 naming the reason.

Token (version 1)::

    ts1.<payload>.<signature>

``payload`` is URL-safe base64 (no padding) of the bytes below; ``signature`` is
itsdangerous' HMAC-SHA256 signature of ``ts1.<payload>`` under ``TLSTM_STATE_KEY`` (salt
``tlstm.state``, HMAC key derivation). The payload bytes:

- 4 bytes: the header's length, unsigned little-endian;
- the header, UTF-8 JSON::

    {"package": "sha256:<hex>",        # sha256 of the package's manifest.json
     "model": "chars", "decoding": "incremental" | "simple",
     "position": 123,                 # characters of text the token stands for
     "pending": 5 | null,             # id of the last character of that text, not yet read by the model
     "sampler": null | {"bit_generator": "PCG64", "state": "<hex>", "inc": "<hex>",
                        "has_uint32": 0 | 1, "uinteger": int},
     "seen": [3, 7, ...],             # ids in the text so far (repetition_penalty)
     "counts": [[7, 2], ...],         # ids generated so far and how often (frequency and presence penalties)
     "arrays": [{"name": "state_h_in", "shape": [3, 8]}, ..., {"name": "logits", "shape": [13]}]}

- the arrays' values, raw float32 little-endian in C order, one after the other in header
  order. ``arrays`` holds the step function's state (per sequence: the committed state for
  simple decoding, the staircase for incremental decoding, named as the step graph's inputs)
  and, when no character is pending, ``logits``: the prediction after the text.

Nothing in a token is ever executed or unpickled: the header is JSON, the rest is numbers
whose names and shapes must be exactly the served model's. Tokens are bounded in size (the
served model's layout fixes it) and are never logged (:class:`RedactStateTokens`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from tlstm.contract import MANIFEST_FILE
from tlstm.files import sha256_file

from .errors import InvalidRequest, StartupError
from .graphs import State

VERSION = 1
PREFIX = f"ts{VERSION}."
SALT = "tlstm.state"
LOGITS = "logits"
MAX_HEADER_BYTES = 4096
_SIGNATURE_CHARS = 43  # base64 of a 32-byte HMAC-SHA256, unpadded
_PREFIX_RE = re.compile(r"ts(\d+)\.")
_MASK_128 = (1 << 128) - 1


class StateTokenError(InvalidRequest):
    """A state token that cannot be used; ``code`` says why (param ``state``)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, param="state", code=code)


class StateTokensDisabled(InvalidRequest):
    """The server has no state key, so it neither makes nor reads state tokens."""

    code = "state_tokens_disabled"

    def __init__(self) -> None:
        super().__init__(
            "state tokens are off on this server: set TLSTM_STATE_KEY (the same secret on every "
            "replica) to use return_state, state and snapshots",
            param="state",
        )


@dataclass(frozen=True)
class Snapshot:
    """Where a stream of text stands, as the model decodes it.

    Attributes:
        state: the step function's state after the text read so far, arrays (1, ...).
        position: characters of text this snapshot stands for (a pending one included).
        pending: the id of the text's last character when the model has not read it yet (a
            generated character: the next step reads it), else None.
        logits: (S,) the prediction after the text, when no character is pending (None for a
            sequence that has read nothing).
        sampler: the state of the sampler's generator (``numpy`` PCG64 ``.state``), so that a
            sampled stream draws on as it would have; None for none.
        seen: the ids in the text so far, ascending (what ``repetition_penalty`` remembers).
        counts: ``(id, times)`` of every id generated so far, ascending (what the frequency
            and presence penalties remember).
    """

    state: State
    position: int
    pending: int | None = None
    logits: np.ndarray | None = None
    sampler: dict[str, Any] | None = None
    seen: tuple[int, ...] = ()
    counts: tuple[tuple[int, int], ...] = ()


# ---------------------------------------------------------------------- sampler state
def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The generator's bit-generator state (a plain dict of ints)."""
    return dict(rng.bit_generator.state)


def rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    """A generator that continues exactly where ``state`` (from :func:`rng_state`) left off."""
    bit_generator = np.random.PCG64()
    bit_generator.state = cast(Any, state)  # numpy checks the dict's keys and values
    return np.random.Generator(bit_generator)


def _sampler_to_json(state: dict[str, Any] | None) -> dict[str, Any] | None:
    if state is None:
        return None
    if state.get("bit_generator") != "PCG64":
        raise ValueError(f"only PCG64 generators travel in state tokens, got {state.get('bit_generator')!r}")
    return {
        "bit_generator": "PCG64",
        "state": format(state["state"]["state"], "x"),
        "inc": format(state["state"]["inc"], "x"),
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


def _sampler_from_json(data: Any) -> dict[str, Any] | None:
    """The PCG64 state dict of a token's ``sampler`` entry; ValueError when it is not one."""
    if data is None:
        return None
    if not isinstance(data, dict) or data.get("bit_generator") != "PCG64":
        raise ValueError("sampler: expected a PCG64 generator state")
    words = {key: int(data[key], 16) for key in ("state", "inc")}
    has, word = data["has_uint32"], data["uinteger"]
    if any(not 0 <= v <= _MASK_128 for v in words.values()) or has not in (0, 1) or not (
        isinstance(word, int) and 0 <= word < 2**32
    ):
        raise ValueError("sampler: values out of range")
    state = {"bit_generator": "PCG64", "state": words, "has_uint32": has, "uinteger": word}
    rng_from_state(state)  # numpy checks it as well
    return state


# ---------------------------------------------------------------------- the codec
def signer(key: bytes) -> Any:
    """itsdangerous' HMAC-SHA256 signer of state tokens under ``key``.

    Raises:
        StartupError: itsdangerous is not installed (only a server with a state key needs it).
    """
    try:
        from itsdangerous import Signer
    except ImportError as exc:
        raise StartupError(
            f"TLSTM_STATE_KEY is set but itsdangerous, which signs state tokens, is not importable ({exc}); "
            "pip install itsdangerous"
        ) from exc
    return Signer(key, salt=SALT, sep=".", key_derivation="hmac", digest_method=hashlib.sha256)


def package_digest(package_path: Path) -> str:
    """``sha256:<hex>`` of a package's manifest.json (which lists every graph's sha256)."""
    return f"sha256:{sha256_file(Path(package_path) / MANIFEST_FILE)}"


def _short(digest: str) -> str:
    return digest[: len("sha256:") + 12] + "…"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not URL-safe base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StateCodec:
    """Makes and reads the state tokens of one served language model (see the module docstring).

    Args:
        key: the signing secret (``TLSTM_STATE_KEY``), shared by every replica.
        model: the model's name.
        package: the package's digest (:func:`package_digest`); tokens are bound to it.
        decoding: ``"incremental"`` or ``"simple"``; tokens are bound to it.
        layout: the step function's state, ``(input name, per-sequence shape)`` in graph order.
        vocab_size: S, the length of ``logits``.
    """

    def __init__(
        self,
        key: bytes,
        *,
        model: str,
        package: str,
        decoding: str,
        layout: Sequence[tuple[str, tuple[int, ...]]],
        vocab_size: int,
    ) -> None:
        if not key:
            raise ValueError("StateCodec: expected a non-empty key")
        self._signer = signer(key)
        self.model = model
        self.package = package
        self.decoding = decoding
        self.layout = [(name, tuple(int(d) for d in shape)) for name, shape in layout]
        self.vocab_size = int(vocab_size)
        floats = sum(int(np.prod(shape)) for _, shape in self.layout) + self.vocab_size
        payload = 4 + MAX_HEADER_BYTES + 4 * floats
        self.max_chars = len(PREFIX) + (payload * 4 + 2) // 3 + 1 + _SIGNATURE_CHARS

    # ------------------------------------------------------------------ making
    def encode(self, snapshot: Snapshot) -> str:
        """The signed token of ``snapshot`` (a stream of this model)."""
        arrays: list[tuple[str, np.ndarray]] = []
        for name, shape in self.layout:
            value = np.asarray(snapshot.state[name], dtype=np.float32)
            if value.shape != (1, *shape):
                raise ValueError(f"state {name}: expected shape {(1, *shape)}, got {value.shape}")
            arrays.append((name, value[0]))
        if snapshot.pending is None and snapshot.logits is not None:
            arrays.append((LOGITS, np.asarray(snapshot.logits, dtype=np.float32).reshape(self.vocab_size)))
        header = {
            "package": self.package,
            "model": self.model,
            "decoding": self.decoding,
            "position": int(snapshot.position),
            "pending": None if snapshot.pending is None else int(snapshot.pending),
            "sampler": _sampler_to_json(snapshot.sampler),
            "seen": [int(i) for i in snapshot.seen],
            "counts": [[int(i), int(n)] for i, n in snapshot.counts],
            "arrays": [{"name": name, "shape": list(value.shape)} for name, value in arrays],
        }
        head = json.dumps(header, separators=(",", ":")).encode()
        data = b"".join(np.ascontiguousarray(value, dtype="<f4").tobytes() for _, value in arrays)
        payload = struct.pack("<I", len(head)) + head + data
        return self._signer.sign(PREFIX + _b64encode(payload)).decode("ascii")

    # ------------------------------------------------------------------ reading
    def decode(self, token: Any) -> Snapshot:
        """The snapshot a token holds, after checking its signature and its binding.

        Raises:
            StateTokenError: with ``code`` ``state_too_large``, ``state_malformed``,
                ``state_outdated``, ``state_truncated``, ``state_bad_signature``,
                ``state_other_package`` or ``state_other_decoding``; the message says why.
        """
        if not isinstance(token, str) or not token:
            raise StateTokenError("state: expected a state token (a string from return_state or a snapshot)",
                                  code="state_malformed")
        if len(token) > self.max_chars:
            raise StateTokenError(
                f"state: the token has {len(token)} characters; a state of model {self.model} takes at most "
                f"{self.max_chars}", code="state_too_large",
            )
        match = _PREFIX_RE.match(token)
        if match is None:
            raise StateTokenError(f"state: not a state token (expected one starting with {PREFIX!r})",
                                  code="state_malformed")
        if int(match.group(1)) != VERSION:
            raise StateTokenError(
                f"state: the token has format version {int(match.group(1))}; this server reads version {VERSION} "
                "(the state cannot be continued here: start again from the text)", code="state_outdated",
            )
        parts = token.split(".")
        if len(parts) < 3 or len(parts[2]) < _SIGNATURE_CHARS:
            raise StateTokenError("state: the token is truncated (its signature is incomplete)", code="state_truncated")
        from itsdangerous import BadSignature

        try:
            signed = self._signer.unsign(token).decode("ascii")
        except BadSignature:
            raise StateTokenError(
                "state: the token's signature does not match: it was altered, or signed with another key "
                "(every replica needs the same TLSTM_STATE_KEY)", code="state_bad_signature",
            ) from None
        try:
            return self._read(_b64decode(signed[len(PREFIX):]))
        except StateTokenError:
            raise
        except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
            raise StateTokenError(f"state: the token's contents are malformed ({exc})", code="state_malformed") from None

    def _read(self, payload: bytes) -> Snapshot:
        (size,) = struct.unpack_from("<I", payload, 0)
        if size > MAX_HEADER_BYTES or 4 + size > len(payload):
            raise ValueError(f"header of {size} bytes")
        header = json.loads(payload[4 : 4 + size].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("the header is not an object")
        if header.get("package") != self.package:
            raise StateTokenError(
                f"state was made by package {header.get('model')} {_short(str(header.get('package')))}, this server "
                f"has {self.model} {_short(self.package)}", code="state_other_package",
            )
        if header.get("decoding") != self.decoding:
            raise StateTokenError(
                f"state was made with {header.get('decoding')} decoding; this server decodes model {self.model} "
                f"with {self.decoding} decoding (TLSTM_DECODE)", code="state_other_decoding",
            )
        position, pending = header["position"], header["pending"]
        if not isinstance(position, int) or position < 0:
            raise ValueError(f"position {position!r}")
        if pending is not None and not (isinstance(pending, int) and 0 <= pending < self.vocab_size):
            raise ValueError(f"pending {pending!r}")
        seen, counts = header["seen"], header["counts"]
        if not (isinstance(seen, list) and all(isinstance(i, int) and 0 <= i < self.vocab_size for i in seen)):
            raise ValueError("seen: expected ids of this model's vocabulary")
        if not (isinstance(counts, list) and all(
            isinstance(c, list) and len(c) == 2 and isinstance(c[0], int) and 0 <= c[0] < self.vocab_size
            and isinstance(c[1], int) and 1 <= c[1] <= position for c in counts
        )):
            raise ValueError("counts: expected [id, times] pairs of this model's vocabulary")
        listed = [(entry["name"], entry["shape"]) for entry in header["arrays"]]
        expected = [(name, list(shape)) for name, shape in self.layout]
        if pending is None and listed and listed[-1][0] == LOGITS:
            expected.append((LOGITS, [self.vocab_size]))
        if listed != expected:
            raise ValueError(f"arrays {listed} are not this model's {expected}")
        floats = sum(int(np.prod(shape)) for _, shape in expected)
        data = payload[4 + size :]
        if len(data) != 4 * floats:
            raise ValueError(f"{len(data)} bytes of values, expected {4 * floats}")
        values = np.frombuffer(data, dtype="<f4").astype(np.float32)
        arrays: dict[str, np.ndarray] = {}
        offset = 0
        for name, shape in expected:
            count = int(np.prod(shape))
            arrays[name] = values[offset : offset + count].reshape(shape)
            offset += count
        logits = arrays.pop(LOGITS, None)
        state = {name: arrays[name][None] for name, _ in self.layout}  # (1, ...) rows
        return Snapshot(state, position, pending, logits, _sampler_from_json(header["sampler"]),
                        tuple(sorted(set(seen))), tuple(sorted((i, n) for i, n in counts)))


# ---------------------------------------------------------------------- logs
_IN_TEXT = re.compile(r"(state=)[^&\s\"']+|ts\d+\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]+")


def redact(text: str) -> str:
    """``text`` with every state token (and every ``state=`` query value) replaced."""
    return _IN_TEXT.sub(lambda m: (m.group(1) or "") + "<state>", text)


class RedactStateTokens(logging.Filter):
    """A logging filter that keeps state tokens out of log records (uvicorn logs WebSocket
    paths with their query string, ``?state=`` included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and ("state=" in a or PREFIX in a) for a in args):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str) and ("state=" in record.msg or PREFIX in record.msg):
            record.msg = redact(record.msg)
        return True


def install_log_redaction(names: Sequence[str] = ("uvicorn", "uvicorn.error", "uvicorn.access", "tlstm")) -> None:
    """Add :class:`RedactStateTokens` to these loggers and to the root logger's handlers."""
    redactor = RedactStateTokens()
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactStateTokens) for f in logger.filters):
            logger.addFilter(redactor)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactStateTokens) for f in handler.filters):
            handler.addFilter(redactor)
