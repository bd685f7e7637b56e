"""Screenshots of the playground's three modes on the shipped models, for the README.

    python -m tests.browser.screenshots [--models models] [--out docs/img]

writes ``playground_lm.png`` (typing: the heat strip and the next-character bars),
``playground_generate.png`` (a streamed continuation) and ``playground_classifier.png`` (a
drawn digit), from a server on loopback over ``--models`` (it needs an ``lm`` package called
``chars`` and an image classifier called ``digits``) in headless Chromium.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.service.live import live_server, make_settings

from .browser import chromium, missing
from .drawing import DIGITS, draw_strokes
from .test_playground import by_id, classified, open_page, predicted_everywhere, set_field, wait

TEXT = "Return the number of items in the queue."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args(argv)
    reason = missing()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with live_server(make_settings(args.models)) as live, chromium(1280, 860) as driver:
        open_page(driver, live.url, "chars")
        box = by_id(driver, "lm-text")
        box.send_keys(TEXT)
        wait(driver, lambda d: predicted_everywhere(d, TEXT))
        driver.save_screenshot(str(args.out / "playground_lm.png"))

        for name, value in {"temperature": 0.6, "seed": 3, "max-tokens": 240}.items():
            set_field(driver, f"gen-{name}", value)
        by_id(driver, "gen-start").click()
        wait(driver, lambda d: by_id(d, "gen-output").get_attribute("data-done") == "1")
        driver.execute_script("document.getElementById('gen-form').scrollIntoView()")
        driver.save_screenshot(str(args.out / "playground_generate.png"))

        open_page(driver, live.url, "digits")
        draw_strokes(driver, by_id(driver, "draw-canvas"), DIGITS["3"])
        wait(driver, lambda d: classified(d, None))
        driver.save_screenshot(str(args.out / "playground_classifier.png"))
    for name in ("lm", "generate", "classifier"):
        print(args.out / f"playground_{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
