"""The OpenAPI document is pinned: an API change must come with a regenerated copy.

Regenerate after an intended change with:

    python -m service.openapi tests/service/openapi.json
"""

from __future__ import annotations

import json
from pathlib import Path

from service.openapi import document, render

PINNED = Path(__file__).with_name("openapi.json")


def test_openapi_document_matches_the_committed_copy():
    current = json.loads(render(document()))
    pinned = json.loads(PINNED.read_text(encoding="utf-8"))
    for doc in (current, pinned):  # the package version is not part of the API
        doc["info"].pop("version")
    assert current == pinned, (
        "the OpenAPI document changed; if intended, regenerate the copy with "
        "`python -m service.openapi tests/service/openapi.json` and commit it"
    )


def test_document_lists_every_http_endpoint():
    paths = document()["paths"]
    assert sorted(paths) == [
        "/health/live", "/health/ready", "/info", "/metrics", "/v1/classify",
        "/v1/completions", "/v1/models", "/v1/models/{model_id}",
    ]
    errors = paths["/v1/completions"]["post"]["responses"]
    assert {"400", "401", "404", "413", "422", "429", "503", "504"} <= set(errors)
    assert errors["429"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
