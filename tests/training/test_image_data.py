"""digits and mnist: sequence shapes, fixed disjoint splits, the permutation, IDX errors."""

import gzip

import numpy as np
import pytest
from sklearn.datasets import load_digits

from training.tasks import DataError, build_task
from training.tasks.classification import pixel_permutation
from training.tasks.digits import split_indices
from training.tasks.idx import read_idx, write_idx

from .conftest import synthetic_mnist


def test_digits_pixel_and_row_sequences():
    pixels, rows = build_task("digits", {}), build_task("digits", {"rows": True})
    assert {s: pixels.splits[s][0].shape for s in ("train", "valid", "test")} == {
        "train": (1257, 64, 1), "valid": (180, 64, 1), "test": (360, 64, 1)}
    assert rows.splits["train"][0].shape == (1257, 8, 8)
    assert pixels.input_size == 1 and pixels.max_length == 64 and rows.input_size == 8 and rows.max_length == 8
    assert np.array_equal(pixels.splits["test"][0].reshape(-1, 64), rows.splits["test"][0].reshape(-1, 64))
    images = load_digits().images
    idx = split_indices(load_digits().target)["test"]
    assert np.allclose(rows.splits["test"][0], images[idx] / 16.0)
    assert pixels.describe()["input"] == {"type": "features", "size": 1, "max_length": 64}
    assert pixels.labels == [str(d) for d in range(10)] and pixels.describe()["kind"] == "classifier"


def test_digits_split_is_fixed_disjoint_stratified_and_complete():
    labels = load_digits().target
    parts = split_indices(labels)
    together = np.concatenate(list(parts.values()))
    assert len(together) == len(set(together.tolist())) == len(labels) == 1797
    for name, idx in split_indices(labels).items():
        assert np.array_equal(idx, parts[name])
    counts = np.bincount(labels[parts["test"]], minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # ~36 of each class among 360


def test_permutation_is_fixed_and_applied():
    plain, permuted = build_task("digits", {}), build_task("digits", {"permute": True})
    perm = pixel_permutation(64)
    assert np.array_equal(perm, pixel_permutation(64)) and not np.array_equal(perm, np.arange(64))
    assert np.array_equal(permuted.splits["train"][0][:, :, 0], plain.splits["train"][0][:, perm, 0])
    assert permuted.info["permutation"] == perm.tolist() and plain.info["permutation"] is None


def test_classifier_epochs_visit_every_example_at_most_once():
    from collections import Counter

    task = build_task("digits", {"rows": True})
    per_epoch = task.steps_per_epoch(100)
    assert per_epoch == 12  # 1257 // 100; the remainder waits for another epoch's order
    epoch = Counter(row.tobytes() for s in range(per_epoch) for row in task.train_batch(s, 100, seed=0).inputs.numpy())
    available = Counter(row.tobytes() for row in task.splits["train"][0])
    assert sum(epoch.values()) == 1200
    assert all(count <= available[key] for key, count in epoch.items())  # no example twice in an epoch
    first, second = task.train_batch(0, 100, seed=0), task.train_batch(per_epoch, 100, seed=0)
    assert not np.array_equal(first.targets, second.targets)  # a new order each epoch


def test_mnist_from_idx_files(tmp_path, mnist_dir):
    task = build_task("mnist", {"data": str(mnist_dir)})
    assert [len(task.splits[s][1]) for s in ("train", "valid", "test")] == [100, 20, 40]  # 5/6, 1/6 of 120; t10k
    assert task.splits["train"][0].shape == (100, 784, 1) and task.max_length == 784
    rows = build_task("mnist", {"data": str(mnist_dir), "rows": True})
    assert rows.splits["valid"][0].shape == (20, 28, 28)
    images = read_idx(mnist_dir / "train-images-idx3-ubyte")
    assert np.allclose(rows.splits["valid"][0], images[100:] / 255.0)  # the last sixth validates
    gz = build_task("mnist", {"data": str(synthetic_mnist(tmp_path / "gz", gz=True))})
    assert np.array_equal(gz.splits["test"][1], task.splits["test"][1])


def test_idx_round_trip(tmp_path):
    for array in (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([1.5, -2.0], dtype=np.float32), np.array([-7, 9], dtype=np.int32)):
        write_idx(tmp_path / "a.idx", array)
        back = read_idx(tmp_path / "a.idx")
        assert back.dtype == array.dtype and np.array_equal(back, array)


def test_missing_mnist_files_are_listed(tmp_path, mnist_dir):
    with pytest.raises(DataError, match="not a directory"):
        build_task("mnist", {"data": str(tmp_path / "nowhere")})
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "train-images-idx3-ubyte").write_bytes((mnist_dir / "train-images-idx3-ubyte").read_bytes())
    with pytest.raises(DataError, match=r"missing MNIST file\(s\) \['train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'\]"):
        build_task("mnist", {"data": str(partial)})


def _copy(mnist_dir, tmp_path):
    target = tmp_path / "copy"
    target.mkdir()
    for f in mnist_dir.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "train-images-idx3-ubyte").write_bytes((d / "train-images-idx3-ubyte").read_bytes()[:-5]),
         r"train-images-idx3-ubyte: the header promises shape \(120, 28, 28\) \(94080 data bytes\), the file holds 94075"),
        (lambda d: (d / "t10k-labels-idx1-ubyte").write_bytes(b"PK\x03\x04junk"), "t10k-labels-idx1-ubyte: not an IDX file"),
        (lambda d: write_idx(d / "train-labels-idx1-ubyte", np.zeros(119, np.uint8)), "119 labels for the 120 images"),
        (lambda d: write_idx(d / "t10k-labels-idx1-ubyte", np.full(40, 12, np.uint8)), r"labels must lie in 0\.\.9, found 12"),
        (lambda d: write_idx(d / "t10k-images-idx3-ubyte", np.zeros((40, 784), np.uint8)), r"expected uint8 images of shape \(N, H, W\)"),
        (lambda d: (d / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5])), "unknown IDX type code 0x07"),
    ],
)
def test_malformed_mnist_files_are_named(tmp_path, mnist_dir, damage, message):
    data = _copy(mnist_dir, tmp_path)
    damage(data)
    with pytest.raises(DataError, match=message):
        build_task("mnist", {"data": str(data)})


def test_corrupt_gzip_is_named(tmp_path, mnist_dir):
    data = _copy(mnist_dir, tmp_path)
    raw = (data / "t10k-labels-idx1-ubyte").read_bytes()
    (data / "t10k-labels-idx1-ubyte").unlink()
    (data / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw)[:-4])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: cannot read"):
        build_task("mnist", {"data": str(data)})
