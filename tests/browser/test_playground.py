"""The playground page against the API it talks to: typed text, generated text, drawn digits.

Each test drives the page like a user (keys, clicks, mouse strokes) and checks what the page
shows against the API's own answer for the same input.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import numpy as np
import pytest

from tests.service.helpers import post
from tests.service.live import live_server, make_settings

from .drawing import DIGITS, draw_strokes

TIMEOUT = 60


def wait(driver: Any, condition: Any, timeout: float = TIMEOUT) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d))


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def open_page(driver: Any, url: str, model: str) -> None:
    """A fresh page showing ``model``."""
    driver.get("about:blank")
    driver.get(f"{url}/#model={model}")
    wait(driver, lambda d: by_id(d, "card-fields").get_attribute("textContent").find(model) >= 0)


READ_LM = """
return {
  heat: Array.from(document.querySelectorAll('#heat span'), s => s.dataset.logprob === undefined ? null : s.dataset.logprob),
  bars: Array.from(document.querySelectorAll('#next-bars li'), li => [li.dataset.key, Number(li.dataset.prob)]),
  position: document.getElementById('next-bars').dataset.position,
};
"""


def lm_view(driver: Any) -> dict[str, Any]:
    """What the page shows for the typed text, read in one go (the page re-renders as it goes):
    ``heat``, each character's log-probability; ``bars``, (char, prob) of the next one."""
    return driver.execute_script(READ_LM)


def predicted_everywhere(driver: Any, text: str) -> bool:
    view = lm_view(driver)
    return (len(view["heat"]) == len(text) and all(v is not None for v in view["heat"])
            and bool(view["bars"]) and view["position"] == str(len(text) - 1))


def check_against_api(driver: Any, url: str, text: str) -> None:
    """The heat strip equals the API's echo log-probabilities, the bars its next distribution."""
    view = lm_view(driver)
    values = view["heat"]
    echo = post(url, "/v1/completions", {"model": "chars", "prompt": text, "max_tokens": 0, "echo": True,
                                         "logprobs": 0}).json()["choices"][0]["logprobs"]
    assert echo["tokens"] == list(text)
    assert values[0] == ""  # the first character has no prediction
    np.testing.assert_allclose([float(v) for v in values[1:]], echo["token_logprobs"][1:], atol=1e-6)
    after = post(url, "/v1/completions", {"model": "chars", "prompt": text, "max_tokens": 1, "temperature": 0,
                                          "logprobs": 10}).json()["choices"][0]["logprobs"]["top_logprobs"][0]
    shown = view["bars"]
    expected = sorted(after.items(), key=lambda kv: -kv[1])
    assert [char for char, _ in shown] == [char for char, _ in expected]
    np.testing.assert_allclose([p for _, p in shown], [math.exp(lp) for _, lp in expected], rtol=1e-6)


def test_typing_shows_each_characters_probability_and_the_next_distribution(driver, site):
    open_page(driver, site.url, "chars")
    box = by_id(driver, "lm-text")
    box.clear()
    text = "abc def.\nghij"
    box.send_keys(text)  # one key, one input event, one append message
    wait(driver, lambda d: predicted_everywhere(d, text))
    check_against_api(driver, site.url, text)
    assert "bits/char over 12 characters" in by_id(driver, "lm-bits").text

    from selenium.webdriver.common.keys import Keys

    box.send_keys(Keys.BACKSPACE, Keys.BACKSPACE)  # an edit that is no extension: reset, then the text again
    shorter = text[:-2]
    wait(driver, lambda d: predicted_everywhere(d, shorter))
    check_against_api(driver, site.url, shorter)


def set_field(driver: Any, element_id: str, value: Any) -> None:
    field = by_id(driver, element_id)
    field.clear()
    field.send_keys(str(value))


def test_generation_streams_the_api_text_for_the_same_seed(driver, site):
    open_page(driver, site.url, "chars")
    box = by_id(driver, "lm-text")
    box.clear()
    box.send_keys("abc ")
    params = {"temperature": 0.9, "top_k": 6, "top_p": 0.95, "seed": 7, "max_tokens": 60,
              "frequency_penalty": 0.4, "presence_penalty": 0.3, "repetition_penalty": 1.2}
    for name, value in params.items():
        set_field(driver, f"gen-{name.replace('_', '-')}", value)
    set_field(driver, "gen-stop", "\\n\\n")
    by_id(driver, "gen-start").click()
    wait(driver, lambda d: by_id(d, "gen-output").get_attribute("data-done") == "1")
    shown = by_id(driver, "gen-text").get_attribute("textContent")
    reason = by_id(driver, "gen-output").get_attribute("data-finish-reason")
    expected = post(site.url, "/v1/completions", {"model": "chars", "prompt": "abc ", "stop": ["\n\n"], **params}).json()
    assert shown == expected["choices"][0]["text"] and shown
    assert reason == expected["choices"][0]["finish_reason"]
    rate = by_id(driver, "gen-rate").text
    assert rate.endswith(" chars/s") and float(rate.split()[0]) > 0
    by_id(driver, "gen-accept").click()  # the continuation becomes part of the typed text
    whole = "abc " + shown
    assert by_id(driver, "lm-text").get_attribute("value") == whole
    wait(driver, lambda d: predicted_everywhere(d, whole))
    check_against_api(driver, site.url, whole)


READ_CLASSIFIER = """
return {
  seq: document.getElementById('class-bars').dataset.seq || null,
  input: document.getElementById('draw-preview').dataset.input,
  label: document.getElementById('class-label').textContent,
  bars: Array.from(document.querySelectorAll('#class-bars li'), li => [li.dataset.key, Number(li.dataset.prob)]),
};
"""


def classifier_view(driver: Any) -> dict[str, Any]:
    return driver.execute_script(READ_CLASSIFIER)


def classified(driver: Any, previous: str | None) -> bool:
    seq = classifier_view(driver)["seq"]
    return seq is not None and seq != previous


def page_classification(driver: Any) -> tuple[list[list[float]], str, dict[str, float]]:
    view = classifier_view(driver)
    return json.loads(view["input"]), view["label"], dict(view["bars"])


def check_classification(driver: Any, url: str) -> list[list[float]]:
    grid, label, probabilities = page_classification(driver)
    assert len(grid) == 8 and all(len(row) == 8 for row in grid)
    assert all(0 <= v <= 16 for row in grid for v in row) and max(max(row) for row in grid) > 8
    body = post(url, "/v1/classify", {"model": "digits", "inputs": [grid], "input_format": "image"}).json()
    assert label == body["data"][0]["label"]
    assert probabilities == dict(zip(body["labels"], body["data"][0]["probabilities"], strict=True))
    return grid


@pytest.mark.parametrize("digit", ["7", "0"])
def test_a_drawn_digit_gets_the_api_label_for_the_same_downsampled_image(driver, site, digit):
    open_page(driver, site.url, "digits")
    assert "8 x 8 pixels, values 0 to 16" in by_id(driver, "draw-shape").text
    by_id(driver, "draw-clear").click()
    draw_strokes(driver, by_id(driver, "draw-canvas"), DIGITS[digit])
    wait(driver, lambda d: classified(d, None))
    grid = check_classification(driver, site.url)
    # the ink sits where the strokes went: a 7's top row is dark, a 0's centre is empty
    if digit == "7":
        assert sum(grid[0]) > sum(grid[-1])
    else:
        assert grid[4][3] + grid[4][4] < 1 and grid[4][1] + grid[4][6] > 8


def test_a_dropped_image_is_shrunk_and_classified(driver, site, tmp_path):
    from matplotlib import image
    from sklearn.datasets import load_digits

    digit = load_digits().images[0]  # a 0, 8x8 values 0..16, as dark ink on light paper the canvas's size
    path = tmp_path / "digit.png"
    image.imsave(path, np.kron(1 - digit / 16, np.ones((35, 35))), cmap="gray", vmin=0, vmax=1)
    open_page(driver, site.url, "digits")
    by_id(driver, "draw-fit").click()  # keep the image's own frame
    try:
        previous = classifier_view(driver)["seq"]
        by_id(driver, "draw-file").send_keys(str(path))
        wait(driver, lambda d: classified(d, previous))
        grid = check_classification(driver, site.url)
    finally:
        by_id(driver, "draw-fit").click()
    np.testing.assert_allclose(grid, digit, atol=0.1)  # the pixels it was given, to 8-bit grey levels


def test_model_cards_and_an_api_key(driver, browser_models):
    with live_server(make_settings(browser_models, api_keys="s3cret")) as locked:
        driver.get(f"{locked.url}/")
        wait(driver, lambda d: "needs an API key" in by_id(d, "status").text)
        driver.execute_script("sessionStorage.clear()")
        key = by_id(driver, "api-key")
        key.send_keys("s3cret")
        driver.execute_script("document.getElementById('api-key').dispatchEvent(new Event('change'))")
        wait(driver, lambda d: "2 model(s) served" in by_id(d, "status").text)
        cards = {m["id"]: m for m in httpx.get(f"{locked.url}/v1/models", headers={"Authorization": "Bearer s3cret"}).json()["data"]}
        fields = driver.execute_script(
            "return Object.fromEntries(Array.from(document.querySelectorAll('#card-fields dd'), e => [e.dataset.field, e.textContent]))")
        assert fields["id"] == "chars" and fields["kind"] == "language model"
        assert fields["depth L"] == str(cards["chars"]["depth"]) and fields["provider"] == "CPUExecutionProvider"
        assert fields["vocabulary"] == f"{len(cards['chars']['vocab'])} symbols"
        # the WebSocket carries the key as a subprotocol: predictions appear
        box = by_id(driver, "lm-text")
        box.clear()
        box.send_keys("abc")
        wait(driver, lambda d: predicted_everywhere(d, "abc"))
        key.clear()
        driver.execute_script("sessionStorage.clear()")
