"""The short thread switch interval holds exactly while some model generates or reads a prompt."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from service.engine.observer import Observer
from service.engine.sampling import SamplingParams
from service.engine.switching import SWITCHING, GenerationSwitching

from .conftest import Packages
from .test_engine import make_engine, random_features

BUSY_S = 0.0003


@pytest.fixture
def default_interval():
    before, busy_before = sys.getswitchinterval(), SWITCHING.busy_s
    yield before
    SWITCHING.configure(busy_before)
    sys.setswitchinterval(before)


def test_counter_sets_the_interval_for_the_first_busy_one_and_restores_it_after_the_last(default_interval):
    switching = GenerationSwitching()
    switching.configure(BUSY_S)
    switching.enter()
    switching.enter()
    assert (sys.getswitchinterval(), switching.busy) == (pytest.approx(BUSY_S), 2)
    switching.leave()
    assert sys.getswitchinterval() == pytest.approx(BUSY_S)
    switching.leave()
    assert (sys.getswitchinterval(), switching.busy) == (default_interval, 0)


def test_unconfigured_counter_leaves_the_interval_alone(default_interval):
    switching = GenerationSwitching()
    switching.enter()
    assert sys.getswitchinterval() == default_interval
    switching.leave()
    assert sys.getswitchinterval() == default_interval


class IntervalDuringTicks(Observer):
    """Records the switch interval each time a tick reports characters (on the scheduler thread)."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def tokens(self, model: str, count: int) -> None:
        self.seen.append(sys.getswitchinterval())


def test_generation_and_prefill_run_with_the_short_interval_and_classification_without(
        packages: Packages, default_interval, monkeypatch):
    observer = IntervalDuringTicks()
    engine = make_engine(packages, observer)
    try:
        SWITCHING.configure(BUSY_S)
        observer.seen.clear()  # the warm-up's ticks ran before
        engine.model("digits").classifier.submit(random_features(np.random.default_rng(0), 1)).result(5)  # no scheduler wakes
        assert sys.getswitchinterval() == default_interval
        generation = engine.model("chars").generation
        during_prefill = []
        prefill = generation.step_fn.prefill

        def recording_prefill(*args):
            during_prefill.append(sys.getswitchinterval())
            return prefill(*args)

        monkeypatch.setattr(generation.step_fn, "prefill", recording_prefill)
        result = generation.complete("abc", SamplingParams(max_new=40, seed=3))
        assert during_prefill == [pytest.approx(BUSY_S)]
        assert len(result.text) == 40
        assert len(observer.seen) >= 2 and observer.seen == [pytest.approx(BUSY_S)] * len(observer.seen)
        deadline = time.monotonic() + 5
        while SWITCHING.busy and time.monotonic() < deadline:  # the scheduler goes back to waiting
            time.sleep(0.01)
        assert (SWITCHING.busy, sys.getswitchinterval()) == (0, default_interval)
    finally:
        engine.stop()
