"""Raw inputs prepared on the server: the same numbers as the training task's, every form.

The reference is the training code itself: ``DigitsTask`` and ``MnistTask`` build their
splits from the raw images, and the server's preparation of those raw images must give
exactly those arrays; over HTTP, the raw forms must give the probabilities of the
client-prepared form (the shipped ``models/digits`` on scikit-learn's digits, and a tiny
permuted pixel-by-pixel package against its PyTorch model).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from websockets.sync.client import connect

from service.engine.errors import InvalidRequest
from service.engine.inputs import InputSpec, parse_input
from service.engine.preprocess import ImagePreprocessing
from tests.training.conftest import synthetic_mnist
from tlstm.contract import PackageError

from .conftest import _export
from .helpers import post
from .live import LiveServer, live_server, make_settings

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_DIGITS = ROOT / "models" / "digits"


def image_spec(height: int, width: int, scale: float, rows: bool, permute: bool) -> InputSpec:
    from training.tasks.classification import image_info

    size, steps = (width, height) if rows else (1, height * width)
    image = ImagePreprocessing.from_manifest(image_info(height, width, scale, rows, permute), size, steps)
    return InputSpec(type="features", size=size, max_length=steps, image=image)


def message(item: Any, spec: InputSpec, input_format: str = "auto") -> str:
    with pytest.raises(InvalidRequest) as info:
        parse_input(item, 0, spec, input_format)
    assert info.value.param in ("inputs", "input_format")
    return info.value.message


# ---------------------------------------------------------------------- against the training code
@pytest.mark.parametrize(("rows", "permute"), [(True, False), (False, False), (True, True), (False, True)])
def test_digits_raw_images_become_exactly_the_tasks_sequences(rows, permute):
    from sklearn.datasets import load_digits

    from training.tasks.digits import DigitsTask, split_indices

    data = load_digits()
    task = DigitsTask(rows=rows, permute=permute)
    spec = image_spec(8, 8, 1 / 16, rows, permute)
    test = split_indices(data.target)["test"]
    expected = task.splits["test"][0]  # (360, T, R) float32, as training saw it
    for n, index in enumerate(test):
        image = data.images[index]
        for item, form in ((image.tolist(), "auto"), (data.data[index].tolist(), "auto"),
                           (image.tolist(), "image"), (data.data[index].tolist(), "pixels")):
            got = parse_input(item, 0, spec, form)
            assert got.dtype == np.float32 and np.array_equal(got, expected[n]), (index, form)
        # the prepared form still means what it meant before raw inputs existed
        assert np.array_equal(parse_input(expected[n].tolist(), 0, spec), expected[n])
        assert np.array_equal(parse_input(expected[n].tolist(), 0, spec, "sequence"), expected[n])


@pytest.mark.parametrize(("rows", "permute"), [(True, False), (False, True)])
def test_mnist_raw_images_become_exactly_the_tasks_sequences(tmp_path, rows, permute):
    from training.tasks.idx import read_idx
    from training.tasks.mnist import MnistTask

    directory = synthetic_mnist(tmp_path / "mnist", n_train=12, n_test=5)
    task = MnistTask(str(directory), rows=rows, permute=permute)
    images = read_idx(directory / "t10k-images-idx3-ubyte")  # (5, 28, 28) uint8, values 0..255
    spec = image_spec(28, 28, 1 / 255, rows, permute)
    assert spec.image is not None and spec.image.divisor == 255.0
    for image, expected in zip(images, task.splits["test"][0], strict=True):
        assert np.array_equal(parse_input(image.tolist(), 0, spec), expected)
        assert np.array_equal(parse_input(image.reshape(-1).tolist(), 0, spec), expected)


# ---------------------------------------------------------------------- forms and errors
DIGIT_ROWS = image_spec(8, 8, 1 / 16, rows=True, permute=False)
DIGIT_PIXELS = image_spec(8, 8, 1 / 16, rows=False, permute=True)


def test_each_package_lists_its_forms():
    assert [f.card() for f in DIGIT_ROWS.forms] == [
        {"name": "image", "shape": [8, 8], "range": [0.0, 16.0], "description": "8 x 8 pixel values in [0, 16]"},
        {"name": "pixels", "shape": [64], "range": [0.0, 16.0], "description": "64 pixel values in [0, 16], row by row"},
        {"name": "sequence", "shape": ["T", 8], "range": [0.0, 1.0],
         "description": "1 to 8 steps of 8 numbers: the model's input (pixel / 16, one row per step)"},
    ]
    assert DIGIT_PIXELS.forms[2].description == (
        "1 to 64 steps of 1 number (or 1 to 64 numbers): the model's input (pixel / 16, pixels permuted, one pixel per step)")
    plain = InputSpec(type="features", size=3, max_length=4)
    assert [f.name for f in plain.forms] == ["sequence"]
    tokens = InputSpec(type="tokens", size=4, max_length=3, vocab=("a", "b", "c", "d"))
    assert [f.card() for f in tokens.forms] == [
        {"name": "text", "shape": ["T"], "range": None, "description": "a string of 1 to 3 characters of the vocabulary"},
        {"name": "ids", "shape": ["T"], "range": [0, 3], "description": "1 to 3 token ids in [0, 4)"},
    ]


def test_a_wrong_input_names_every_form_and_its_shape():
    forms = ("'image': 8 x 8 pixel values in [0, 16]; 'pixels': 64 pixel values in [0, 16], row by row; "
             "'sequence': 1 to 8 steps of 8 numbers: the model's input (pixel / 16, one row per step)")
    assert message(list(range(10)), DIGIT_ROWS) == f"inputs[0]: expected one of the forms {forms}; got a list of 10 numbers"
    assert message([[1] * 7] * 8, DIGIT_ROWS) == f"inputs[0]: expected one of the forms {forms}; got a list of 8 lists of 7 items"
    assert message([[1] * 8] * 9, DIGIT_ROWS) == f"inputs[0]: expected one of the forms {forms}; got a list of 9 lists of 8 items"
    assert message("a digit", DIGIT_ROWS) == f"inputs[0]: expected one of the forms {forms}; got str"
    assert message([[0] * 8] * 8, DIGIT_ROWS, "pixels") == (
        "inputs[0]: expected the 'pixels' form, 64 pixel values in [0, 16], row by row; got a list of 8 lists of 8 items")
    assert message([0] * 64, DIGIT_ROWS, "png") == (
        "input_format: expected one of 'auto', 'image', 'pixels', 'sequence' for this model, got 'png'")
    assert message([0] * 63 + [17], DIGIT_ROWS) == "inputs[0][63]: expected a pixel value in [0, 16], got 17"
    assert message([[0] * 8] * 7 + [[0] * 7 + [-1]], DIGIT_ROWS) == "inputs[0][7][7]: expected a pixel value in [0, 16], got -1"
    assert message([[0] * 8] * 7 + [[0] * 7 + ["3"]], DIGIT_ROWS, "image") == (
        "inputs[0][7][7]: expected a pixel value in [0, 16], got '3'")
    assert message([[0] * 8] * 3 + [[0, float("nan")] + [0] * 6] + [[0] * 8] * 4, DIGIT_ROWS, "image") == (
        "inputs[0][3][1]: expected a pixel value in [0, 16], got nan")
    assert message([0] * 10 + [True] + [0] * 53, DIGIT_ROWS) == "inputs[0][10]: expected a pixel value in [0, 16], got True"
    # packages without an image keep their messages
    plain = InputSpec(type="features", size=3, max_length=4)
    assert message([[1, 2]], plain) == "inputs[0][0]: expected a feature vector of 3 numbers, got 2 numbers"
    assert message([[1, 2, 3]], plain, "image") == "input_format: expected one of 'auto', 'sequence' for this model, got 'image'"
    tokens = InputSpec(type="tokens", size=4, max_length=3, vocab=("a", "b", "c", "d"))
    assert message([0, 1], tokens, "text") == "inputs[0]: expected the 'text' form, a string of 1 to 3 characters of the vocabulary; got a list of 2 numbers"
    assert np.array_equal(parse_input("ab", 0, tokens, "text"), parse_input([0, 1], 0, tokens, "ids"))


def test_a_shape_two_forms_share_is_decided_by_the_values():
    image = np.arange(64, dtype=np.float32).reshape(8, 8) % 17  # values up to 16: an image
    assert np.array_equal(parse_input(image.tolist(), 0, DIGIT_ROWS), image / np.float32(16))
    faint = image / 16  # all in [0, 1]: the model's own form, as before
    assert np.array_equal(parse_input(faint.tolist(), 0, DIGIT_ROWS), faint.astype(np.float32))
    assert np.array_equal(parse_input(faint.tolist(), 0, DIGIT_ROWS, "image"), faint.astype(np.float32) / np.float32(16))
    flat = image.reshape(-1)
    assert np.array_equal(parse_input(flat.tolist(), 0, DIGIT_PIXELS),
                          (flat / np.float32(16))[DIGIT_PIXELS.image.permutation].reshape(64, 1))


@pytest.mark.parametrize(
    ("info", "error"),
    [
        ({"image_shape": [8], "scale": 1 / 16, "step": "row"}, "preprocessing.image_shape: expected [height, width] of positive ints, got [8]"),
        ({"image_shape": [8, 8], "scale": 0, "step": "row"}, "preprocessing.scale: expected a positive number, got 0"),
        ({"image_shape": [8, 8], "scale": 1 / 16, "step": "col"}, "preprocessing.step: expected one of ['row', 'pixel'], got 'col'"),
        ({"image_shape": [2, 2], "scale": 1, "step": "pixel", "permutation": [0, 1, 1, 2]},
         "preprocessing.permutation: expected a permutation of 0..3 or null"),
        ({"image_shape": [8, 4], "scale": 1 / 16, "step": "row"},
         "preprocessing: an image of 8 x 4 read one row per step is 8 steps of 4 features, but the package's input is 8 steps of 8"),
    ],
)
def test_a_malformed_preprocessing_entry_is_a_package_error(info, error):
    with pytest.raises(PackageError) as raised:
        ImagePreprocessing.from_manifest(info, 8, 8)
    assert str(raised.value) == f"manifest.json: {error}"


# ---------------------------------------------------------------------- over HTTP and the WebSocket
PERMUTED = {"height": 4, "width": 4, "scale": 1 / 255}


@pytest.fixture(scope="module")
def raw_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Any]]:
    """The shipped digits package and a tiny permuted pixel-by-pixel one (4x4, 0..255)."""
    from model import variant_config
    from training.tasks.classification import image_info

    root = tmp_path_factory.mktemp("raw-models")
    shutil.copytree(SHIPPED_DIGITS, root / "digits")
    model = _export(
        root, "pdigits",
        variant_config("tlstm-2d", input_size=1, output_size=3, depth=2, channels=8, input_type="features"),
        {"name": "tiny-permuted", "kind": "classifier", "labels": ["a", "b", "c"],
         "input": {"type": "features", "size": 1, "max_length": 16},
         "info": image_info(PERMUTED["height"], PERMUTED["width"], PERMUTED["scale"], rows=False, permute=True)},
    )
    with live_server(make_settings(root)) as live:
        yield live, model


def probabilities(server: LiveServer, model: str, inputs: list[Any], **extra: Any) -> np.ndarray:
    response = post(server.url, "/v1/classify", {"model": model, "inputs": inputs, **extra})
    assert response.status_code == 200, response.text
    return np.array([item["probabilities"] for item in response.json()["data"]])


def test_shipped_digits_raw_forms_equal_the_prepared_form_and_the_recorded_accuracy(raw_server):
    from sklearn.datasets import load_digits

    from training.tasks.digits import split_indices

    server, _ = raw_server
    data = load_digits()
    test = split_indices(data.target)["test"]
    manifest = json.loads((SHIPPED_DIGITS / "manifest.json").read_text())
    assert manifest["preprocessing"]["step"] == "row"
    correct = 0
    for start in range(0, len(test), 90):
        chunk = test[start : start + 90]
        images = data.images[chunk]  # (N, 8, 8) values 0..16
        prepared = probabilities(server, "digits", (images / 16).tolist())  # what a client had to do
        for raw in (probabilities(server, "digits", images.tolist()),
                    probabilities(server, "digits", data.data[chunk].tolist()),
                    probabilities(server, "digits", images.astype(int).tolist(), input_format="image")):
            np.testing.assert_allclose(raw, prepared, rtol=1e-6, atol=1e-7)
        correct += int((prepared.argmax(1) == data.target[chunk]).sum())
    assert correct / len(test) == pytest.approx(manifest["metrics"]["test_accuracy"], abs=1.5 / len(test))


def test_a_permuted_package_applies_its_own_permutation(raw_server):
    from training.tasks.classification import to_sequences

    server, model = raw_server
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(6, PERMUTED["height"], PERMUTED["width"]))
    sequences = to_sequences(images.astype(np.float32) / 255.0, rows=False, permute=True)  # (6, 16, 1)
    prepared = probabilities(server, "pdigits", sequences.tolist())
    np.testing.assert_allclose(probabilities(server, "pdigits", images.tolist()), prepared, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(probabilities(server, "pdigits", images.reshape(6, -1).tolist()), prepared, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        x = torch.from_numpy(sequences)
        reference = torch.softmax(model.classify(x, torch.full((6,), 16)).double(), -1).numpy()
    np.testing.assert_allclose(prepared, reference, atol=1e-5)
    unpermuted = probabilities(server, "pdigits", to_sequences(images.astype(np.float32) / 255.0, rows=False, permute=False).tolist())
    assert not np.allclose(unpermuted, prepared, atol=1e-4)  # the permutation matters to this model


def test_cards_list_the_forms_and_errors_name_them(raw_server):
    import httpx

    server, _ = raw_server
    card = httpx.get(f"{server.url}/v1/models/digits").json()
    assert [(f["name"], f["shape"], f["range"]) for f in card["input"]["forms"]] == [
        ("image", [8, 8], [0, 16]), ("pixels", [64], [0, 16]), ("sequence", ["T", 8], [0, 1])]
    assert card["metrics"]["test_accuracy"] == json.loads((SHIPPED_DIGITS / "manifest.json").read_text())["metrics"]["test_accuracy"]
    response = post(server.url, "/v1/classify", {"model": "digits", "inputs": [[0.5] * 64, [1, 2, 3]]})
    assert response.status_code == 400
    assert response.json() == {"error": {
        "message": "inputs[1]: expected one of the forms 'image': 8 x 8 pixel values in [0, 16]; 'pixels': 64 pixel "
                   "values in [0, 16], row by row; 'sequence': 1 to 8 steps of 8 numbers: the model's input (pixel / 16, "
                   "one row per step); got a list of 3 numbers",
        "type": "invalid_request_error", "param": "inputs", "code": "invalid_value"}}
    response = post(server.url, "/v1/classify", {"model": "digits", "inputs": [[0] * 64], "input_format": "jpeg"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "input_format"


def test_a_websocket_session_classifies_raw_inputs_like_the_api(raw_server):
    from sklearn.datasets import load_digits

    server, _ = raw_server
    images = load_digits().images[:5]
    expected = probabilities(server, "digits", (images / 16).tolist())
    with connect(f"{server.ws_url}/v1/stream?model=digits") as ws:
        hello = json.loads(ws.recv(timeout=30))
        assert hello["type"] == "ready" and hello["kind"] == "classifier" and hello["labels"] == [str(d) for d in range(10)]
        for n, image in enumerate(images):
            form = "pixels" if n % 2 else "auto"
            item = image.reshape(-1).tolist() if n % 2 else image.tolist()
            ws.send(json.dumps({"type": "classify", "input": item, "input_format": form, "top_k": 2, "id": n}))
            answer = json.loads(ws.recv(timeout=30))
            assert answer["type"] == "classification" and answer["id"] == n
            np.testing.assert_allclose(answer["probabilities"], expected[n], rtol=1e-6, atol=1e-7)
            assert answer["class_index"] == int(expected[n].argmax()) == answer["top"][0]["class_index"]
            assert len(answer["top"]) == 2
        ws.send(json.dumps({"type": "classify", "input": [1, 2, 3]}))
        error = json.loads(ws.recv(timeout=30))
        assert error["type"] == "error" and error["error"]["param"] == "inputs"
        assert error["error"]["message"].startswith("inputs[0]: expected one of the forms 'image': 8 x 8")
        ws.send(json.dumps({"type": "append", "text": "abc"}))
        error = json.loads(ws.recv(timeout=30))
        assert error["error"]["message"] == "type: expected 'classify' on a classifier session, got 'append'"
        ws.send(json.dumps({"type": "classify", "input": images[0].tolist()}))  # the session goes on
        assert json.loads(ws.recv(timeout=30))["type"] == "classification"


def test_a_websocket_key_can_travel_as_a_subprotocol(packages):
    import base64

    def hello(**kwargs: Any) -> tuple[dict[str, Any], str | None]:
        with connect(f"{locked.ws_url}/v1/stream?model=chars", **kwargs) as ws:
            return json.loads(ws.recv(timeout=30)), ws.subprotocol

    encoded = base64.urlsafe_b64encode(b"k/ey=1").decode().rstrip("=")
    with live_server(make_settings(packages.root, api_keys="k/ey=1")) as locked:
        first, protocol = hello(subprotocols=["tlstm", f"tlstm.bearer.{encoded}"])
        assert first["type"] == "ready" and protocol == "tlstm"
        first, _ = hello(subprotocols=["tlstm", "tlstm.bearer.d3Jvbmc"])  # "wrong"
        assert first["type"] == "error" and first["error"]["code"] == "invalid_api_key"
        first, protocol = hello(additional_headers={"Authorization": "Bearer k/ey=1"})
        assert first["type"] == "ready" and protocol is None
