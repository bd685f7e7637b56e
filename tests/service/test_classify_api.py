"""POST /v1/classify over real HTTP: values against PyTorch, order, top-k, concurrency."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .conftest import NAME_VOCAB
from .helpers import post


def torch_probabilities(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model.classify(x[None], torch.tensor([x.shape[0]]))[0].double(), -1).numpy()


def classify(server, **body):
    response = post(server.url, "/v1/classify", body)
    assert response.status_code == 200, response.text
    return response.json()


def test_feature_sequences_match_pytorch_in_order(server, packages):
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((int(n), 4)).round(3).tolist() for n in (3, 12, 1, 7)]
    body = classify(server, model="digits", inputs=inputs, top_k=2)
    assert body["object"] == "classification" and body["model"] == "digits" and body["labels"] == ["x", "y", "z"]
    assert body["usage"] == {"inputs": 4, "steps": 23}
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
    for item, x in zip(body["data"], inputs, strict=True):
        expected = torch_probabilities(packages.models["digits"], torch.tensor(x, dtype=torch.float32))
        np.testing.assert_allclose(item["probabilities"], expected, atol=1e-5)
        assert item["class_index"] == int(np.argmax(expected)) and item["label"] == "xyz"[item["class_index"]]
        order = np.argsort(-np.asarray(item["probabilities"]), kind="stable")[:2]
        assert [t["class_index"] for t in item["top"]] == list(order)
        assert [t["label"] for t in item["top"]] == ["xyz"[i] for i in order]


def test_strings_for_token_classifiers(server, packages):
    texts = ["abc", "f", "deadbeef", "cafe"]
    body = classify(server, model="names", inputs=texts, return_probabilities=False)
    for item, text in zip(body["data"], texts, strict=True):
        assert "probabilities" not in item or item["probabilities"] is None
        expected = torch_probabilities(packages.models["names"], torch.tensor([NAME_VOCAB.index(c) for c in text]))
        assert item["class_index"] == int(np.argmax(expected))
    ids = classify(server, model="names", inputs=[[0, 1, 2]])["data"][0]
    assert ids["probabilities"] == classify(server, model="names", inputs=["abc"])["data"][0]["probabilities"]


def test_concurrent_clients_get_what_they_get_alone(server):
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal((int(n), 4)).round(4).tolist() for n in rng.integers(1, 13, 32)]
    alone = [classify(server, model="digits", inputs=[x])["data"][0]["probabilities"] for x in inputs]
    barrier = threading.Barrier(len(inputs))

    def together(x):
        barrier.wait()
        return classify(server, model="digits", inputs=[x])["data"][0]["probabilities"]

    with ThreadPoolExecutor(len(inputs)) as pool:
        assert list(pool.map(together, inputs)) == alone
