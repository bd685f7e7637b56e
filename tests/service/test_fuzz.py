"""The HTTP API fuzzed from its own OpenAPI document (schemathesis) against the real app.

A server of its own (the tiny models of conftest, the real engine, the lifespan run by uvicorn)
publishes ``/openapi.json``. Before fuzzing, the test puts into that document what the server
publishes elsewhere: the served model names as enums (so that requests get past the 404), its
limits from ``/info`` as bounds (so that no accepted request asks the engine for much), and,
for each served model, the shape of a request it accepts (inputs from its model card, prompts
over the vocabulary of conftest's language model, and the options supported over their whole
range) as an alternative to the document's own looser body.

Every operation then gets a fixed, derandomized set of valid and invalid requests. Each must be
answered without a 5xx and with a body the document allows for its status code, and at least
one request per operation must succeed.

The WebSocket route is not in the document and is not fuzzed. Bodies the document gives no
schema, ``/metrics``' text and streamed completions (``text/event-stream``), are checked for
their status only.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from .conftest import LM_VOCAB
from .live import LiveServer, live_server, make_settings

EXAMPLES_PER_OPERATION = 50
CHECKS = [not_a_server_error, response_schema_conformance]

# Small limits keep every accepted request cheap for the engine; /info publishes them.
LIMITS = {"max_new_chars": 24, "max_prompts": 4, "max_prompt_chars": 256, "max_inputs": 8}

# The options a request the model accepts may carry, over their whole documented range (the
# others, such as n or the penalties, are supported at their defaults only).
COMPLETION_OPTIONS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "logprobs", "echo", "stream",
                      "stream_options", "user")
CLASSIFY_OPTIONS = ("top_k", "return_probabilities")
MAX_STOPS = 4

OPERATIONS = (
    "GET /health/live",
    "GET /health/ready",
    "GET /info",
    "GET /metrics",
    "GET /v1/models",
    "GET /v1/models/{model_id}",
    "POST /v1/classify",
    "POST /v1/completions",
)


def _only(items: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    """The one item of ``items`` with these values (KeyError when not exactly one)."""
    found = [item for item in items if all(item.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise KeyError(f"expected one item with {match}, found {len(found)}")
    return found[0]


def served_document(
    doc: dict[str, Any], cards: list[dict[str, Any]], limits: dict[str, Any], vocab: list[str]
) -> dict[str, Any]:
    """``doc`` with the served models and limits in it (see the module docstring).

    Args:
        doc: the served OpenAPI document (changed in place).
        cards: ``GET /v1/models``'s ``data``.
        limits: ``GET /info``'s ``limits``.
        vocab: the characters of the served language model.

    Raises:
        KeyError: a part of the document this relies on is gone (update this function).
    """
    schemas = doc["components"]["schemas"]
    completion = schemas["CompletionRequest"]["properties"]
    classify = schemas["ClassifyRequest"]["properties"]
    completion["model"]["enum"] = sorted(c["id"] for c in cards if c["kind"] == "lm")
    classify["model"]["enum"] = sorted(c["id"] for c in cards if c["kind"] == "classifier")
    model_id = _only(doc["paths"]["/v1/models/{model_id}"]["get"]["parameters"], name="model_id")
    model_id["schema"]["enum"] = sorted(c["id"] for c in cards)

    _only(completion["max_tokens"]["anyOf"], type="integer")["maximum"] = limits["max_new_chars"]
    _only(completion["prompt"]["anyOf"], type="array")["maxItems"] = limits["max_prompts"]
    classify["inputs"]["maxItems"] = limits["max_inputs"]

    text = {"type": "string", "pattern": f"^[{re.escape(''.join(vocab))}]+$", "maxLength": limits["max_prompt_chars"]}
    texts = {"type": "array", "items": text, "minItems": 1, "maxItems": limits["max_prompts"]}
    completions: dict[str, dict[str, Any]] = {}
    for card in cards:
        if card["kind"] == "lm":
            completions[f"CompletionRequestFor_{card['id']}"] = _accepted(
                schemas["CompletionRequest"], COMPLETION_OPTIONS, model=card["id"],
                prompt={"anyOf": [text, texts]},
                stop={"anyOf": [text, {**texts, "maxItems": MAX_STOPS}, {"type": "null"}]},
            )
    _alternatives(doc, "/v1/completions", "CompletionRequest", completions)

    classifications: dict[str, dict[str, Any]] = {}
    for card in cards:
        if card["kind"] != "classifier":
            continue
        spec = card["input"]
        if spec["type"] == "tokens":
            # The ids form: the card gives their range, not the vocabulary. An enum is never sent as 1.0.
            step: dict[str, Any] = {"enum": list(range(spec["size"]))}
        else:
            # Feature values a model can take without overflowing (larger ones get a 400, tested
            # by the negative cases and by test_inputs).
            number = {"type": "number", "minimum": -1e3, "maximum": 1e3}
            step = {"type": "array", "items": number, "minItems": spec["size"], "maxItems": spec["size"]}
        sequence = {"type": "array", "items": step, "minItems": 1, "maxItems": spec["max_length"]}
        classifications[f"ClassifyRequestFor_{card['id']}"] = _accepted(
            schemas["ClassifyRequest"], CLASSIFY_OPTIONS, model=card["id"],
            inputs={"type": "array", "items": sequence, "minItems": 1, "maxItems": limits["max_inputs"]},
        )
    _alternatives(doc, "/v1/classify", "ClassifyRequest", classifications)
    return doc


def _accepted(request: dict[str, Any], options: tuple[str, ...], model: str, **shaped: Any) -> dict[str, Any]:
    """A request ``model`` accepts: the ``shaped`` fields and ``options`` of ``request``."""
    properties = request["properties"]
    return {
        "type": "object",
        "properties": {"model": {"type": "string", "enum": [model]}, **shaped,
                       **{name: copy.deepcopy(properties[name]) for name in options}},
        "required": ["model", *(name for name in shaped if name in request["required"])],
    }


def _alternatives(doc: dict[str, Any], path: str, name: str, accepted: dict[str, dict[str, Any]]) -> None:
    """Make the JSON body of ``POST path`` any of its schema ``name`` and the ``accepted`` ones."""
    body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    if body["schema"] != {"$ref": f"#/components/schemas/{name}"}:
        raise KeyError(f"POST {path}: expected a body of {name}, got {body['schema']}")
    doc["components"]["schemas"].update(accepted)
    body["schema"] = {"anyOf": [{"$ref": f"#/components/schemas/{n}"} for n in (name, *accepted)]}


@pytest.fixture(scope="module")
def fuzz_server(packages: Any) -> Iterator[LiveServer]:
    with live_server(make_settings(packages.root, **LIMITS)) as live:
        yield live


@pytest.fixture(scope="module")
def document(fuzz_server: LiveServer) -> dict[str, Any]:
    url = fuzz_server.url
    doc = httpx.get(f"{url}/openapi.json", timeout=30).json()
    cards = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    limits = httpx.get(f"{url}/info", timeout=30).json()["limits"]
    return served_document(doc, cards, limits, LM_VOCAB)


@pytest.fixture(scope="module")
def api_schema(fuzz_server: LiveServer, document: dict[str, Any]) -> Any:
    config = schemathesis.Config.from_dict({"base-url": fuzz_server.url, "request-timeout": 60})
    return schemathesis.openapi.from_dict(document, config=config)


def test_the_fuzzed_operations_are_those_of_the_document(api_schema: Any) -> None:
    served = sorted(result.ok().label for result in api_schema.get_all_operations())
    assert served == sorted(OPERATIONS), "a new operation is fuzzed once it is in OPERATIONS"


def test_the_served_models_are_in_the_document(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["CompletionRequest"]["properties"]["model"]["enum"] == ["chars"]
    assert schemas["ClassifyRequest"]["properties"]["model"]["enum"] == ["digits", "names"]
    assert schemas["ClassifyRequestFor_names"]["properties"]["inputs"]["items"] == {
        "type": "array", "items": {"enum": [0, 1, 2, 3, 4, 5]}, "minItems": 1, "maxItems": 10,
    }
    assert schemas["ClassifyRequestFor_digits"]["properties"]["inputs"]["items"]["items"]["maxItems"] == 4
    (model_id,) = document["paths"]["/v1/models/{model_id}"]["get"]["parameters"]
    assert model_id["schema"]["enum"] == ["chars", "digits", "names"]


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_answers_without_5xx_and_within_its_schema(
    api_schema: Any, document: dict[str, Any], label: str
) -> None:
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]
    strategy = operation.as_strategy(GenerationMode.POSITIVE)
    definition = document["paths"][path][method.lower()]
    if "parameters" in definition or "requestBody" in definition:  # else nothing to make invalid
        strategy = st.one_of(strategy, operation.as_strategy(GenerationMode.NEGATIVE))
    statuses: list[int] = []

    @settings(
        max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        statuses.append(case.call_and_validate(checks=CHECKS).status_code)

    fuzz()
    assert any(200 <= status < 300 for status in statuses), f"no request succeeded: {sorted(set(statuses))}"
