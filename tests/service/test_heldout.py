"""Held-out prose scored through a real ``tlstm serve`` (training.heldout) against PyTorch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.heldout import heldout_texts, score_package

from .conftest import LM_VOCAB
from .test_completions import torch_logprobs


def test_heldout_texts_are_the_regular_files_in_name_order_with_plain_whitespace(tmp_path):
    (tmp_path / "b-licence").write_text("Section 1.\f\nTerms\tand conditions.\n")
    (tmp_path / "a-licence").write_text("Permission is granted.\n")
    (tmp_path / "link").symlink_to(tmp_path / "a-licence")  # the same text under another name: skipped
    (tmp_path / "sub").mkdir()
    texts = heldout_texts(tmp_path)
    assert texts == {"a-licence": "Permission is granted.\n", "b-licence": "Section 1.\nTerms and conditions.\n"}


def test_heldout_texts_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="no text files; expected a directory of licence texts"):
        heldout_texts(tmp_path)
    (tmp_path / "odd").write_text("caf\u00e9\n")
    with pytest.raises(ValueError, match="odd: characters outside printable ASCII \\['\u00e9'\\]"):
        heldout_texts(tmp_path)


def test_heldout_score_through_the_server_equals_pytorch(packages):
    texts = {"one": "a bad cafe.\nhig", "two": "jab. bag\ndig gig"}
    result = score_package(packages.root, "chars", texts)
    total_bits = 0.0
    for name, text in texts.items():
        reference = torch_logprobs(packages.lm, text)
        bits = -sum(reference[t - 1][LM_VOCAB.index(text[t])] for t in range(1, len(text))) / math.log(2)
        assert result["texts"][name]["chars"] == len(text) - 1  # the first character has no context
        assert result["texts"][name]["bpc"] == pytest.approx(bits / (len(text) - 1), abs=1e-4)
        total_bits += bits
    assert result["chars"] == sum(len(t) - 1 for t in texts.values())
    assert result["bpc"] == pytest.approx(total_bits / result["chars"], abs=1e-4)
    assert np.isfinite(result["bpc"]) and 0 < result["bpc"] < 8



def test_the_default_models_report_scores_and_samples_through_the_server(packages):
    from training.default_models import SAMPLE_CHARS, served_report

    texts = {"one": "a bad cafe.\nhig"}
    report = served_report(packages.root, texts=texts, prompt="ab")
    assert report["heldout"]["source"] == "the texts given" and report["heldout"]["chars"] == len(texts["one"]) - 1
    greedy, warm = report["samples"]["greedy"], report["samples"]["temperature 0.7"]
    assert greedy["request"]["temperature"] == 0.0 and warm["request"] == {
        "model": "chars", "prompt": "ab", "max_tokens": SAMPLE_CHARS, "temperature": 0.7, "seed": 0}
    reference = torch_logprobs(packages.lm, greedy["text"])  # greedy: every character is the argmax
    for t in range(2, len(greedy["text"])):
        row = reference[t - 1]
        assert row[LM_VOCAB.index(greedy["text"][t])] >= row.max() - 1e-5
    assert len(greedy["text"]) == len(warm["text"]) == 2 + SAMPLE_CHARS and set(warm["text"]) <= set(LM_VOCAB)
