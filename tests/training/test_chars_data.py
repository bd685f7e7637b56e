"""chars: splits, vocabularies, enwik8 recognition, the default corpus, and LM target alignment."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import build_model, variant_config
from training.corpus import collect_docstrings, collect_reference, corpus_fingerprint
from training.tasks import DataError, build_task
from training.tasks.base import IGNORE
from training.tasks.chars import ENWIK8_BYTES, CharsTask, split_sizes
from training.tasks.lm import EVAL_STREAMS


def test_file_split_is_90_5_5_in_order(tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(1000)) + "é"  # 1001 characters, one non-ASCII
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    task = CharsTask(str(path))
    sizes = [len(task.splits[s]) for s in ("train", "valid", "test")]
    assert sizes == [900, 50, 51] and sum(sizes) == len(text)
    assert task.vocab == sorted(set(text)) and task.settings["encoding"] == "chars"
    decoded = "".join(task.vocab[i] for s in ("train", "valid", "test") for i in task.splits[s])
    assert decoded == text  # contiguous, disjoint, covering, in file order


def test_binary_file_is_modelled_as_bytes(tmp_path):
    raw = bytes([0xFF, 0x00, 0x41] * 100)  # not UTF-8
    path = tmp_path / "b.bin"
    path.write_bytes(raw)
    task = CharsTask(str(path))
    assert task.settings["encoding"] == "bytes"
    assert task.vocab == [chr(0x00), "A", chr(0xFF)]
    decoded = bytes(ord(task.vocab[i]) for s in ("train", "valid", "test") for i in task.splits[s])
    assert decoded == raw
    with pytest.raises(DataError, match="not valid UTF-8"):
        CharsTask(str(path), encoding="chars")


def test_enwik8_is_recognised_by_its_size_and_split_90m_5m_5m(tmp_path):
    path = tmp_path / "enwik8"
    with open(path, "wb") as fh:  # sparse: zeros, with a few marker bytes at the split points
        fh.truncate(ENWIK8_BYTES)
        for offset, value in ((0, b"<"), (89_999_999, b"a"), (90_000_000, b"b"), (95_000_000, b"c"), (ENWIK8_BYTES - 1, b">")):
            fh.seek(offset)
            fh.write(value)
    task = CharsTask(str(path))
    assert [len(task.splits[s]) for s in ("train", "valid", "test")] == [90_000_000, 5_000_000, 5_000_000]
    assert task.settings["encoding"] == "bytes" and task.info["corpus"] == "enwik8"
    assert task.vocab == ["\x00", "<", ">", "a", "b", "c"]  # the bytes present, sorted
    v = task.vocab.index
    assert task.splits["train"][-1] == v("a") and task.splits["valid"][0] == v("b")
    assert task.splits["test"][0] == v("c") and task.splits["test"][-1] == v(">")
    assert split_sizes(ENWIK8_BYTES, enwik8=True) == (90_000_000, 5_000_000, 5_000_000)


def test_uniform_stream_is_iid_uniform_deterministic_and_split_90_5_5():
    task = CharsTask(uniform=4)
    assert task.vocab == ["A", "B", "C", "D"] and task.settings["uniform"] == 4 and task.info["entropy_bits"] == 2.0
    sizes = [len(task.splits[s]) for s in ("train", "valid", "test")]
    assert sizes == [180_000, 10_000, 10_000]
    counts = np.bincount(task.splits["train"], minlength=4) / sizes[0]
    assert np.abs(counts - 0.25).max() < 0.005  # five standard deviations of a uniform draw
    pairs = np.bincount(task.splits["train"][:-1] * 4 + task.splits["train"][1:], minlength=16) / (sizes[0] - 1)
    assert np.abs(pairs - 1 / 16).max() < 0.003  # successive symbols independent
    again = CharsTask(uniform=4)
    assert again.info["fingerprint"] == task.info["fingerprint"]
    assert all(np.array_equal(again.splits[k], task.splits[k]) for k in task.splits)


@pytest.mark.parametrize(("options", "message"), [
    ({"uniform": 1}, "uniform: expected a number of symbols from 2 to 64, got 1"),
    ({"uniform": 65}, "uniform: expected a number of symbols from 2 to 64, got 65"),
    ({"uniform": 4, "data": "x.txt"}, "expected one source, a file or the uniform stream"),
    ({"uniform": 4, "encoding": "bytes"}, "the uniform stream is modelled as characters"),
])
def test_bad_uniform_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        CharsTask(**options)


@pytest.mark.parametrize(("content", "message"), [(None, "no such file"), (b"", "0 bytes; expected at least 100"),
                                                  (b"abc", "3 bytes; expected at least 100")])
def test_bad_files_are_named(tmp_path, content, message):
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        CharsTask(str(path))
    assert str(path) in str(info.value)


def test_docstring_corpus_is_deterministic_and_plain(tmp_path):
    pkg = tmp_path / "lib"
    (pkg / "b").mkdir(parents=True)
    (pkg / "test").mkdir()
    (pkg / "a.py").write_text('"""Module a."""\ndef f():\n    """Function f.\n\n    More."""\nclass C:\n    """Class C."""\n')
    (pkg / "b" / "c.py").write_text('"""Module b.c."""\n')
    (pkg / "test" / "t.py").write_text('"""A test module."""\n')  # test suites are skipped
    (pkg / "u.py").write_text('"""Caf\u00e9."""\n"""not a docstring"""\n')  # non-ASCII docstrings are skipped
    (pkg / "broken.py").write_text("def (:\n")  # unparsable files are skipped
    text = collect_docstrings(pkg)
    assert text == "Module a.\n\nFunction f.\n\nMore.\n\nClass C.\n\nModule b.c.\n"
    assert collect_docstrings(pkg) == text
    with pytest.raises(ValueError, match="no Python docstrings found"):
        collect_docstrings(tmp_path / "empty")


@pytest.mark.slow
def test_default_corpus_is_the_stdlib_docstrings():
    task = build_task("chars", {})
    text = "".join(task.vocab[i] for s in ("train", "valid", "test") for i in task.splits[s])
    assert task.info["fingerprint"] == corpus_fingerprint(text)
    assert task.info["corpus"] == "python-stdlib-docstrings"
    assert len(text) > 1_000_000 and set(task.vocab) <= {chr(c) for c in range(32, 127)} | {"\n"}
    assert "JSON (JavaScript Object Notation)" in text  # json's module docstring
    n = len(text)
    assert [len(task.splits[s]) for s in ("train", "valid", "test")] == [int(n * 0.9), int(n * 0.05), n - int(n * 0.9) - int(n * 0.05)]


@pytest.mark.slow
def test_python_docs_corpus_is_the_reference_then_the_docstrings():
    task = build_task("chars", {"corpus": "python-docs"})
    text = "".join(task.vocab[i] for s in ("train", "valid", "test") for i in task.splits[s])
    reference, docstrings = collect_reference(), collect_docstrings()  # each collected once: they take a while
    assert text == reference.rstrip("\n") + "\n\n" + docstrings and task.info["fingerprint"] == corpus_fingerprint(text)
    assert task.info["corpus"] == "python-reference-and-docstrings" and task.settings["corpus"] == "python-docs"
    assert 'The "assert" statement' in reference  # the first help topic in name order
    assert set(text) <= {chr(c) for c in range(32, 127)} | {"\n"}
    assert not set(reference) & set("\u2018\u2019\u201c\u201d\u2013\u2014\u2026")


@pytest.mark.parametrize(("options", "message"), [
    ({"corpus": "enwik8"}, "corpus: expected one of \\['docstrings', 'python-docs'\\], got 'enwik8'"),
    ({"corpus": "python-docs", "data": "x.txt"}, "expected one source, a file or a Python corpus"),
    ({"corpus": "python-docs", "uniform": 4}, "expected one source, a Python corpus or the uniform stream"),
])
def test_bad_corpus_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        CharsTask(**options)


# ---------------------------------------------------------------- LM alignment
def _lm_task(tmp_path, n=2000, bptt=8):
    rng = np.random.default_rng(0)
    path = tmp_path / "lm.txt"
    path.write_text("".join(rng.choice(list("abcdefgh"), size=n)), encoding="utf-8")
    return CharsTask(str(path), bptt=bptt)


@pytest.mark.parametrize("delay", [0, 1, 3])
def test_targets_follow_the_delay_across_segments(tmp_path, delay):
    task = _lm_task(tmp_path)
    streams = task._streams(4)
    steps = task.steps_per_epoch(4)
    assert steps == (streams.shape[1] - 1) // 8
    for step in (0, 1, 2, steps, steps + 1):  # the second pass restarts
        batch = task.train_batch(step, 4, seed=0, delay=delay)
        start = (step % steps) * 8
        assert batch.reset == (step % steps == 0)
        assert np.array_equal(batch.inputs, streams[:, start : start + 8])
        for j in range(8):
            s = start + j  # raw output s predicts the symbol after input s - delay
            if s < delay:
                assert (batch.targets[:, j] == IGNORE).all()
            else:
                assert np.array_equal(batch.targets[:, j], streams[:, s - delay + 1])


@pytest.mark.parametrize("variant", ["tlstm-2d", "tlstm-3d+cn", "lstm"])
def test_segmented_training_loss_equals_the_whole_sequence_loss(tmp_path, variant):
    """Truncated BPTT with the carried state scores exactly what the aligned forward scores."""
    task = _lm_task(tmp_path, n=400, bptt=8)
    torch.manual_seed(0)
    model = build_model(variant_config(variant, input_size=task.input_size, output_size=task.output_size, depth=3, channels=8))
    delay, segments = model.delay, 5
    carry, total, count = None, 0.0, 0.0
    with torch.no_grad():
        for step in range(segments):
            loss, sums, carry = task.loss(model, task.train_batch(step, 4, seed=0, delay=delay), None if step == 0 else carry)
            total += sums["loss_sum"]
            count += sums["count"]
            assert loss.item() == pytest.approx(sums["loss_sum"] / sums["count"], rel=1e-6)
        stream = torch.from_numpy(task._streams(4)[:, : segments * 8 + 1].astype(np.int64))
        aligned = model(stream[:, : segments * 8])  # out[:, t] predicts x[t + 1]
        scored = segments * 8 - delay  # the last delay inputs' predictions come in the next segment
        reference = F.cross_entropy(aligned[:, :scored].reshape(-1, task.output_size), stream[:, 1 : scored + 1].reshape(-1), reduction="sum")
    assert count == 4 * scored
    assert total == pytest.approx(reference.item(), rel=1e-5)


def test_evaluation_scores_every_symbol_after_each_chunks_first(tmp_path):
    task = _lm_task(tmp_path, n=20000, bptt=8)
    torch.manual_seed(1)
    model = build_model(variant_config("tlstm-2d", input_size=task.input_size, output_size=task.output_size, depth=3, channels=8)).eval()
    sums = task.evaluate(model, "test", 64)
    data = torch.from_numpy(task.splits["test"].astype(np.int64))
    chunk = len(data) // EVAL_STREAMS
    rows = data[: EVAL_STREAMS * chunk].view(EVAL_STREAMS, chunk)
    with torch.no_grad():
        logits = model(rows[:, :-1])
        reference = F.cross_entropy(logits.reshape(-1, task.output_size), rows[:, 1:].reshape(-1), reduction="sum")
    assert sums["count"] == EVAL_STREAMS * (chunk - 1)
    assert sums["loss_sum"] == pytest.approx(reference.item(), rel=1e-5)
    for batch_size, world in ((5, 1), (64, 2), (3, 2)):  # neither the batch nor the processes change the result
        parts = [task.evaluate(model, "test", batch_size, rank=r, world=world) for r in range(world)]
        assert sum(p["count"] for p in parts) == sums["count"]
        assert sum(p["loss_sum"] for p in parts) == pytest.approx(sums["loss_sum"], rel=1e-6)
    assert task.metrics(sums)["bpc"] == pytest.approx(sums["loss_sum"] / sums["count"] / math.log(2))


def test_too_short_train_split_is_named(tmp_path):
    task = _lm_task(tmp_path, n=200, bptt=50)
    with pytest.raises(DataError, match="too short for batch size 8 x bptt 50"):
        task.train_batch(0, 8, seed=0)
