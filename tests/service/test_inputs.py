"""Classification inputs are checked against the input specification, errors name the item."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.engine.errors import InvalidRequest
from service.engine.inputs import InputSpec, pad_batch, parse_input

FEATURES = InputSpec(type="features", size=3, max_length=4)
SCALARS = InputSpec(type="features", size=1, max_length=5)
TOKENS = InputSpec(type="tokens", size=4, max_length=3, vocab=("a", "b", "c", "d"))


def test_valid_inputs_become_arrays():
    np.testing.assert_array_equal(parse_input([[1, 2, 3], [4, 5, 6.5]], 0, FEATURES),
                                  np.array([[1, 2, 3], [4, 5, 6.5]], np.float32))
    np.testing.assert_array_equal(parse_input([1, 2, 3], 0, SCALARS), np.array([[1], [2], [3]], np.float32))
    np.testing.assert_array_equal(parse_input("cab", 0, TOKENS), np.array([2, 0, 1]))
    np.testing.assert_array_equal(parse_input([3, 0], 0, TOKENS), np.array([3, 0]))


@pytest.mark.parametrize(
    ("spec", "item", "message"),
    [
        (FEATURES, [[1, 2, 3], [1, 2]], "inputs[2][1]: expected a feature vector of 3 numbers, got 2 numbers"),
        (FEATURES, [[1, 2, math.inf]], "inputs[2][0][2]: expected a finite number, got inf"),
        (FEATURES, [[1, 2, "3"]], "inputs[2][0][2]: expected a finite number, got '3'"),
        (FEATURES, [[1, 2, True]], "inputs[2][0][2]: expected a finite number, got True"),
        (FEATURES, [[1, 2, 3], [math.nan, 0, 0]], "inputs[2][1][0]: expected a finite number, got nan"),
        (FEATURES, [[1, 2, 3], [0, 1e39, 0]],
         "inputs[2][1][1]: expected a number within float32's range (|x| <= 3.403e+38), got 1e+39"),
        (FEATURES, [[1, 2, 10**400]],
         f"inputs[2][0][2]: expected a number within float32's range (|x| <= 3.403e+38), got {10**400!r}"),
        (FEATURES, [[0, 0, 0]] * 5, "inputs[2]: expected 1 to 4 steps, got 5"),
        (FEATURES, [], "inputs[2]: expected 1 to 4 steps, got 0"),
        (FEATURES, "abc", "inputs[2]: expected a list of feature vectors of 3 numbers, 1 to 4 steps, got str"),
        (SCALARS, [1, 2, None], "inputs[2][0]: expected a feature vector of 1 numbers, got int"),
        (TOKENS, "abz", "inputs[2]: character 'z' at position 2 is not in the model's vocabulary"),
        (TOKENS, [0, 4], "inputs[2]: token id 4 at step 1 is outside [0, 4)"),
        (TOKENS, "abcd", "inputs[2]: expected 1 to 3 steps, got 4"),
        (TOKENS, [[1]], "inputs[2]: expected a string or a list of token ids in [0, 4), 1 to 3 steps, got a list of 1 items"),
    ],
)
def test_bad_inputs_name_the_item(spec, item, message):
    with pytest.raises(InvalidRequest) as info:
        parse_input(item, 2, spec)
    assert info.value.message == message
    assert info.value.param == "inputs"


def test_the_numpy_path_keeps_every_value_exactly():
    rng = np.random.default_rng(0)
    rows = [[float(v) for v in row] for row in rng.normal(0, 1e30, (4, 3))]
    rows[1][2] = 3  # ints and floats mixed
    rows[2][0] = -3.4028234663852886e38  # float32's most negative
    expected = np.array([[np.float32(v) for v in row] for row in rows], np.float32)
    np.testing.assert_array_equal(parse_input(rows, 0, FEATURES), expected)


def test_pad_batch_right_pads_with_zeros():
    x, lengths = pad_batch([np.ones((2, 3), np.float32), np.ones((1, 3), np.float32) * 2], FEATURES)
    assert x.shape == (2, 2, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(lengths, [2, 1])
    np.testing.assert_array_equal(x[1, 1], [0, 0, 0])
    ids, lengths = pad_batch([np.array([1, 2, 3]), np.array([3])], TOKENS)
    np.testing.assert_array_equal(ids, [[1, 2, 3], [3, 0, 0]])
