"""Held-out prose, scored through the served API: how a language model does on English text that
no corpus of this project trains on.

    python -m training.heldout [--models models] [--model chars] [--texts /usr/share/common-licenses]
                               [--out FILE.json]

The texts are the licences every Debian or Ubuntu system keeps in ``/usr/share/common-licenses``
(the ``base-files`` package): each regular file once (the symbolic links there name the same
texts), in name order. They are reserved for this check; no training corpus may hold them. Tabs
become spaces and form feeds are dropped, so every character is printable ASCII or a newline.

Each text goes to a real ``tlstm serve`` over loopback as one ``/v1/completions`` prompt with
``echo`` and ``logprobs``, ``max_tokens = 0``. The score is the bits of every character after a
text's first (which has no context), summed over the texts and divided by their count.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import httpx

from tlstm.files import write_json_atomic

HELDOUT_DIR = Path("/usr/share/common-licenses")
_WHITESPACE = str.maketrans({"\t": " ", "\f": None})
_PLAIN = frozenset(chr(c) for c in range(32, 127)) | {"\n"}


def heldout_texts(root: Path = HELDOUT_DIR) -> dict[str, str]:
    """``{file name: text}`` of the regular files under ``root``, in name order, whitespace normalised.

    Raises:
        ValueError: ``root`` holds no such file, or a text has characters outside printable ASCII.
    """
    texts = {}
    for path in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if path.is_symlink() or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8").translate(_WHITESPACE)
        odd = sorted(set(text) - _PLAIN)
        if odd:
            raise ValueError(f"{path}: characters outside printable ASCII {odd}; expected plain English text")
        texts[path.name] = text
    if not texts:
        raise ValueError(f"{root}: no text files; expected a directory of licence texts such as {HELDOUT_DIR}")
    return texts


def score_texts(url: str, model: str, texts: dict[str, str], timeout: float = 600) -> dict[str, Any]:
    """Bits per character of each text and of all together, from the server's echoed log-probabilities."""
    per_text: dict[str, dict[str, float]] = {}
    total_bits, total_chars = 0.0, 0
    with httpx.Client(base_url=url, timeout=timeout) as client:
        for name, text in texts.items():
            response = client.post("/v1/completions", json={"model": model, "prompt": text, "max_tokens": 0,
                                                            "echo": True, "logprobs": 0})
            if response.status_code != 200:
                raise RuntimeError(f"{name}: the server answered {response.status_code}: {response.text}")
            choice = response.json()["choices"][0]
            logprobs = [lp for lp in choice["logprobs"]["token_logprobs"] if lp is not None]
            if choice["text"] != text or len(logprobs) != len(text) - 1:
                raise RuntimeError(f"{name}: the echo does not match the text sent ({len(logprobs)} scores for {len(text)} characters)")
            bits = -sum(logprobs) / math.log(2)
            per_text[name] = {"chars": len(logprobs), "bpc": bits / len(logprobs)}
            total_bits += bits
            total_chars += len(logprobs)
    return {"bpc": total_bits / total_chars, "chars": total_chars, "texts": per_text}


def server_for(models: Path, texts: dict[str, str]) -> Any:
    """A ``LocalServer`` of ``models`` whose prompt limit admits the longest of ``texts`` (use it with ``with``)."""
    from service.local import LocalServer

    longest = max(len(t) for t in texts.values())
    return LocalServer(models, {"TLSTM_MAX_PROMPT_CHARS": str(longest), "TLSTM_REQUEST_TIMEOUT_S": "600"})


def score_package(models: Path, model: str, texts: dict[str, str]) -> dict[str, Any]:
    """Serve ``models`` on a free loopback port and score ``texts`` with ``model``."""
    with server_for(models, texts) as server:
        return score_texts(server.url, model, texts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.heldout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("models"), help="directory of model packages")
    parser.add_argument("--model", default="chars", help="the language model to score")
    parser.add_argument("--texts", type=Path, default=HELDOUT_DIR, help="directory of held-out texts")
    parser.add_argument("--out", type=Path, default=None, help="write the scores as JSON here")
    args = parser.parse_args(argv)
    try:
        texts = heldout_texts(args.texts)
        result = score_package(args.models, args.model, texts)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result = {"model": args.model, "source": str(args.texts), **result}
    for name, score in result["texts"].items():
        print(f"{name:12s} {score['chars']:7d} chars  {score['bpc']:.3f} bits/char")
    print(f"{'all':12s} {result['chars']:7d} chars  {result['bpc']:.3f} bits/char  "
          f"(python -m training.heldout --models {args.models} --model {args.model})")
    if args.out is not None:
        write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
