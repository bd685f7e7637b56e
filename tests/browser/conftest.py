"""The playground in a real browser: headless Chromium over a live server on loopback.

Packages (tiny, untrained, exported once per session as in ``tests/service``):

- ``chars``: the service tests' language model over 13 characters;
- ``digits``: an image classifier of 8x8 images of pixel values 0..16 read one row per step,
  whose manifest declares that preprocessing (as the ``digits`` task records it).

Everything here is skipped, naming what is missing, without Chromium, its driver or
Selenium; ``make test-browser`` installs them and fails rather than skips
(``TLSTM_TEST_BROWSER=required``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import LM_VOCAB, _export
from tests.service.live import LiveServer, live_server, make_settings

from .browser import chromium, missing

DIGIT_LABELS = [str(d) for d in range(10)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = missing()
    if reason is None:
        return
    if os.environ.get("TLSTM_TEST_BROWSER") == "required":  # `make test-browser`: no silent skip
        raise pytest.UsageError(reason)
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def browser_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model import variant_config
    from training.tasks.classification import image_info

    root = tmp_path_factory.mktemp("browser-models")
    _export(
        root, "chars",
        variant_config("tlstm-2d", input_size=len(LM_VOCAB), output_size=len(LM_VOCAB), depth=3, channels=8),
        {"name": "tiny-lm", "kind": "lm", "vocab": LM_VOCAB,
         "input": {"type": "tokens", "size": len(LM_VOCAB), "max_length": 64}},
    )
    _export(
        root, "digits",
        variant_config("tlstm-2d", input_size=8, output_size=10, depth=2, channels=8, input_type="features"),
        {"name": "tiny-digits", "kind": "classifier", "labels": DIGIT_LABELS,
         "input": {"type": "features", "size": 8, "max_length": 8},
         "info": image_info(8, 8, 1 / 16, rows=True, permute=False)},
    )
    return root


@pytest.fixture(scope="session")
def site(browser_models: Path) -> Iterator[LiveServer]:
    with live_server(make_settings(browser_models)) as live:
        yield live


@pytest.fixture(scope="session")
def driver() -> Iterator[Any]:
    with chromium() as browser:
        yield browser
