"""LoopDispatch: the scheduler's ticks reach the event loop in order, coalesced and paced."""

import asyncio
import threading
import time
from types import SimpleNamespace

from service.dispatch import LoopDispatch
from service.engine.generation_stream import StreamUpdate


class Recorder:
    """A stand-in stream (its listener records tokens) and a count of the loop's wake-ups."""

    def __init__(self, dispatch: LoopDispatch) -> None:
        self.tokens: list = []
        self.threads: set[int] = set()
        self.wakes: list[float] = []
        self.stream = SimpleNamespace(listener=self._listen)
        deliver = dispatch._deliver

        def counted() -> None:
            self.wakes.append(time.monotonic())
            deliver()

        dispatch._deliver = counted

    def _listen(self, update: StreamUpdate) -> None:
        self.threads.add(threading.get_ident())
        self.tokens.extend(update.tokens)


def _ticks(dispatch: LoopDispatch, recorder: Recorder, count: int, gap_s: float) -> None:
    """A stand-in scheduler thread: one tick (one update) every ``gap_s`` seconds."""
    for i in range(count):
        dispatch([(recorder.stream, StreamUpdate([i]))])
        if gap_s:
            time.sleep(gap_s)


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the updates did not arrive"
        await asyncio.sleep(0.001)


def test_ticks_arrive_in_order_on_the_loop_and_share_a_busy_loops_wake_up():
    async def main() -> tuple[Recorder, int]:
        dispatch = LoopDispatch(asyncio.get_running_loop(), 0.0)
        recorder = Recorder(dispatch)
        worker = threading.Thread(target=_ticks, args=(dispatch, recorder, 200, 0.0))
        worker.start()
        worker.join()  # the loop is blocked meanwhile, as when it is busy writing responses
        await _until(lambda: len(recorder.tokens) == 200)
        return recorder, threading.get_ident()

    recorder, loop_thread = asyncio.run(main())
    assert recorder.tokens == list(range(200))
    assert recorder.threads == {loop_thread}
    assert len(recorder.wakes) == 1


def test_wake_ups_are_paced_by_the_interval():
    interval = 0.02

    async def main() -> Recorder:
        dispatch = LoopDispatch(asyncio.get_running_loop(), interval)
        recorder = Recorder(dispatch)
        worker = threading.Thread(target=_ticks, args=(dispatch, recorder, 60, 0.002))
        worker.start()
        await _until(lambda: len(recorder.tokens) == 60)
        worker.join()
        return recorder

    recorder = asyncio.run(main())
    assert recorder.tokens == list(range(60))
    gaps = [b - a for a, b in zip(recorder.wakes, recorder.wakes[1:], strict=False)]
    assert len(recorder.wakes) >= 3 and min(gaps) >= interval * 0.95
    assert len(recorder.wakes) < 30  # 60 ticks, far fewer wake-ups


def test_an_idle_loop_is_woken_at_once():
    async def main() -> float:
        dispatch = LoopDispatch(asyncio.get_running_loop(), 10.0)
        recorder = Recorder(dispatch)
        dispatch([(recorder.stream, StreamUpdate(["a"]))])
        sent = time.monotonic()
        await _until(lambda: recorder.tokens == ["a"], timeout=5.0)
        return time.monotonic() - sent

    assert asyncio.run(main()) < 5.0  # the interval is 10 s and was not waited for


def test_first_characters_and_stream_ends_are_not_held_back():
    async def main() -> Recorder:
        dispatch = LoopDispatch(asyncio.get_running_loop(), 10.0)
        recorder = Recorder(dispatch)
        stream = recorder.stream
        dispatch([(stream, StreamUpdate(["a"]))])  # idle: at once
        await _until(lambda: recorder.tokens == ["a"], timeout=5.0)
        dispatch([(stream, StreamUpdate(["b"]))])  # held: the last delivery was just now
        await asyncio.sleep(0.05)
        assert recorder.tokens == ["a"]
        dispatch([(stream, StreamUpdate(["c"], first=True))])  # another stream's first character
        await _until(lambda: recorder.tokens == ["a", "b", "c"], timeout=5.0)
        dispatch([(stream, StreamUpdate(["d"]))])
        dispatch([(stream, StreamUpdate(["e"], finish_reason="length"))])  # a stream ends
        await _until(lambda: recorder.tokens == ["a", "b", "c", "d", "e"], timeout=5.0)
        return recorder

    assert len(asyncio.run(main()).wakes) == 3


def test_a_stream_marks_the_update_with_its_first_character():
    import numpy as np

    from service.engine.generation_stream import GenerationStream
    from service.engine.sampling import SamplingParams

    logits = np.log(np.array([0.1, 0.7, 0.2]))
    stream = GenerationStream(["x", "y", "z"], SamplingParams(max_new=3, temperature=0), {}, logits, lambda u: None)
    updates = [stream.advance(logits) for _ in range(3)]
    assert [u.first for u in updates] == [True, False, False]
    assert [u.final for u in updates] == [False, False, True]
    assert "".join(t.text for u in updates for t in u.tokens) == "yyy"
