"""addition and memorization: the spec's formats exactly, generated examples, held-out sets."""

import numpy as np
import pytest

from training.tasks import build_task
from training.tasks.addition import AdditionTask
from training.tasks.memorization import MemorizationTask
from training.tasks.seq2seq import rows_as_keys


def test_addition_format_is_the_specs():
    task = AdditionTask(digits=3, valid_size=10, test_size=10)
    assert task.format_example(123, 900) == ("-123-900-----", "--------1023-")
    assert task.format_example(100, 200) == ("-100-200-----", "--------0300-")  # N+1 digits, leading 0
    assert task.max_length == 3 * 3 + 4


def test_memorization_format_is_the_specs():
    task = MemorizationTask(length=7, symbols=64, valid_size=10, test_size=10)
    assert task.format_example("hiworld") == ("-hiworld----------", "--------hiworld---")
    assert task.max_length == 2 * 7 + 4


def _decode_addition(task, inputs, targets):
    text_in, text_out = task.decode(inputs), task.decode(targets)
    _, a, b, *_ = text_in.split("-")
    return int(a), int(b), text_in, text_out


@pytest.mark.parametrize("digits", [1, 4, 15, 18])
def test_addition_examples_hold_true_sums(digits):
    task = AdditionTask(digits=digits, valid_size=10, test_size=10)
    batch = task.train_batch(3, 64, seed=5)
    assert batch.inputs.shape == batch.targets.shape == (64, 3 * digits + 4)
    for x, y in zip(batch.inputs.numpy(), batch.targets.numpy(), strict=True):
        a, b, text_in, text_out = _decode_addition(task, x, y)
        assert len(str(a)) == len(str(b)) == digits  # true N-digit operands
        assert text_in == f"-{a}-{b}-" + "-" * (digits + 1)
        assert text_out == "-" * (2 * digits + 2) + str(a + b).zfill(digits + 1) + "-"
        assert task.decode(y[task.answer]) == str(a + b).zfill(digits + 1)


def test_memorization_examples_repeat_their_symbols():
    task = MemorizationTask(length=20, symbols=64, valid_size=10, test_size=10)
    batch = task.train_batch(0, 32, seed=1)
    assert batch.inputs.shape == (32, 44) and task.input_size == 65
    for x, y in zip(batch.inputs.numpy(), batch.targets.numpy(), strict=True):
        symbols = task.decode(x[1:21])
        assert "-" not in symbols
        assert task.decode(x) == f"-{symbols}" + "-" * 23
        assert task.decode(y) == "-" * 21 + symbols + "---"
        assert task.decode(y[task.answer]) == symbols


def test_training_batches_are_a_function_of_seed_and_step():
    task = AdditionTask(digits=5, valid_size=10, test_size=10)
    first = task.train_batch(7, 16, seed=3)
    again = task.train_batch(7, 16, seed=3)
    other_step = task.train_batch(8, 16, seed=3)
    other_seed = task.train_batch(7, 16, seed=4)
    assert np.array_equal(first.inputs, again.inputs)
    assert not np.array_equal(first.inputs, other_step.inputs)
    assert not np.array_equal(first.inputs, other_seed.inputs)


def test_ranks_take_their_slices_of_the_global_batch():
    task = MemorizationTask(length=5, symbols=10, valid_size=10, test_size=10)
    whole = task.train_batch(2, 8, seed=0)
    parts = [task.train_batch(2, 8, seed=0, rank=r, world=2) for r in range(2)]
    assert np.array_equal(np.concatenate([p.inputs for p in parts]), whole.inputs)
    with pytest.raises(ValueError, match="batch size 8 is not divisible by the 3 processes"):
        task.train_batch(0, 8, seed=0, world=3)


@pytest.mark.parametrize(("name", "options"), [("addition", {"digits": 2, "valid_size": 300, "test_size": 300}),
                                               ("memorization", {"length": 3, "symbols": 5, "valid_size": 15, "test_size": 15})])
def test_splits_are_disjoint_and_fixed(name, options):
    task = build_task(name, options)
    valid = set(rows_as_keys(task.split_arrays("valid")[0]).tolist())
    test = set(rows_as_keys(task.split_arrays("test")[0]).tolist())
    assert not valid & test
    trained = set()
    for step in range(200):  # small spaces: held-out examples would come up often if not excluded
        trained.update(rows_as_keys(task.train_batch(step, 32, seed=0).inputs.numpy()).tolist())
    assert not trained & (valid | test)
    assert len(trained) > 0.5 * (len(valid) + len(test))  # the generator does cover the space
    again = build_task(name, options)  # held-out sets do not depend on anything but their seeds
    assert np.array_equal(again.split_arrays("test")[0], task.split_arrays("test")[0])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: AdditionTask(digits=0), r"digits: expected an int in \[1, 18\], got 0"),
        (lambda: AdditionTask(digits=19), r"digits: expected an int in \[1, 18\], got 19"),
        (lambda: MemorizationTask(symbols=65), r"symbols: expected an int in \[1, 64\], got 65"),
        (lambda: MemorizationTask(length=2, symbols=4, valid_size=5, test_size=5), "would hold more than half of the 16 possible"),
        (lambda: AdditionTask(valid_size=0), "valid_size: expected a positive int, got 0"),
    ],
)
def test_bad_options_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_format_example_rejects_bad_operands():
    task = AdditionTask(digits=3, valid_size=10, test_size=10)
    with pytest.raises(ValueError, match="a: expected a 3-digit integer, got 12"):
        task.format_example(12, 100)
    mem = MemorizationTask(length=3, symbols=4, valid_size=1, test_size=1)
    with pytest.raises(ValueError, match="text: expected 3 symbols from 'ABCD'"):
        mem.format_example("AB-")
