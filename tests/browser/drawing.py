"""Driving the playground page: typing is plain ``send_keys``; drawing is pointer strokes.

Strokes are lists of points in fractions of the canvas (0..1 from the top left corner).
"""

from __future__ import annotations

import math
from typing import Any

# Digits as the strokes a hand would draw them.
DIGITS: dict[str, list[list[tuple[float, float]]]] = {
    "1": [[(0.42, 0.25), (0.55, 0.12), (0.55, 0.88)]],
    "7": [[(0.25, 0.15), (0.75, 0.15), (0.45, 0.9)]],
    "0": [[(0.5 + 0.22 * math.sin(2 * math.pi * k / 24), 0.5 - 0.36 * math.cos(2 * math.pi * k / 24)) for k in range(25)]],
    "3": [[(0.3, 0.18), (0.55, 0.12), (0.7, 0.25), (0.6, 0.45), (0.45, 0.5), (0.65, 0.55), (0.72, 0.72),
           (0.55, 0.88), (0.3, 0.82)]],
}


def draw_strokes(driver: Any, canvas: Any, strokes: list[list[tuple[float, float]]], steps: int = 6) -> None:
    """Draw ``strokes`` on ``canvas`` with the mouse (each segment in ``steps`` moves)."""
    from selenium.webdriver.common.action_chains import ActionChains

    width, height = canvas.size["width"], canvas.size["height"]

    def offset(point: tuple[float, float]) -> tuple[int, int]:  # Selenium offsets are from the centre
        return round((point[0] - 0.5) * (width - 2)), round((point[1] - 0.5) * (height - 2))

    for stroke in strokes:
        actions = ActionChains(driver, duration=10)
        actions.move_to_element_with_offset(canvas, *offset(stroke[0])).click_and_hold()
        for start, end in zip(stroke, stroke[1:], strict=False):
            for k in range(1, steps + 1):
                t = k / steps
                actions.move_to_element_with_offset(
                    canvas, *offset((start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])))
                )
        actions.release().perform()
