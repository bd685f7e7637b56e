"""Generation streams seen from the event loop.

A :class:`CompletionRun` starts one stream per prompt (prefill in a worker thread), and
collects their updates in one list: the engine's dispatcher runs the listeners on the event
loop. :meth:`CompletionRun.next_updates` waits for the next delivery and merges everything
that arrived meanwhile per stream, so a slow reader receives several characters at once
instead of falling behind. (A plain list and one future per wait: this runs for every stream
on every delivery, and an asyncio queue read under ``wait_for`` costs several times more.)
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from ..engine.engine import ServedModel
from ..engine.generation import GenerationEngine, Prefill
from ..engine.generation_stream import GenerationStream, StreamUpdate
from ..engine.sampling import SamplingParams
from ..engine.state_token import Snapshot
from ..engine.stops import Token


@dataclass
class Choice:
    """One prompt of a request and what became of it so far."""

    index: int
    prompt: str
    echo: list[Token] | None = None  # the prompt scored, when echo is asked for
    stream: GenerationStream | None = None  # None when nothing is generated (max_tokens 0)
    tokens: list[Token] = field(default_factory=list)
    finish_reason: str | None = None
    start: Prefill | None = None  # where generation started (kept for a state token)

    @property
    def generated(self) -> int:
        return self.stream.generated if self.stream is not None else 0


class CompletionRun:
    """The streams of one completion request (see the module docstring)."""

    def __init__(self, served: ServedModel) -> None:
        if served.generation is None:
            raise ValueError(f"model {served.name} is not a language model")
        self.generation: GenerationEngine = served.generation
        self.loop = asyncio.get_running_loop()
        self._arrived: list[tuple[int, StreamUpdate]] = []
        self._waiter: asyncio.Future[None] | None = None
        self.choices: list[Choice] = []
        self.open: set[int] = set()
        self.created = time.perf_counter()

    async def start(
        self, prompts: list[str], params: SamplingParams, *, echo: bool, top: int | None,
        resume: Snapshot | None = None, keep_state: bool = False,
    ) -> None:
        """Encode, prefill and submit every prompt; on any failure cancel what started.

        ``resume``: the prompt is read after the text of this snapshot (a state token), and
        may be empty. ``keep_state``: keep what :meth:`snapshot` needs.
        """
        try:
            for index, prompt in enumerate(prompts):
                await self._start_one(index, prompt, params, echo=echo, top=top, resume=resume, keep_state=keep_state)
        except BaseException:
            self.cancel()
            raise

    async def _start_one(
        self, index: int, prompt: str, params: SamplingParams, *, echo: bool, top: int | None,
        resume: Snapshot | None = None, keep_state: bool = False,
    ) -> None:
        generation = self.generation
        ids = generation.encode(prompt, param="prompt" if index == 0 else f"prompt[{index}]")
        choice = Choice(index, prompt)
        self.choices.append(choice)
        generating = params.max_new > 0
        if generating:
            generation.reserve()
        try:
            if resume is None:
                prefill: Prefill = await asyncio.to_thread(generation.prefill, ids)
            else:
                prefill = await asyncio.to_thread(generation.resume, resume, ids)
            if keep_state:
                choice.start = prefill
            if echo:
                choice.echo = await asyncio.to_thread(generation.score, prefill, top)
        except BaseException:
            if generating:
                generation.unreserve()
            raise
        if not generating:
            choice.finish_reason = "length"
            return
        self.open.add(index)
        choice.stream = generation.open_stream(prefill, params, lambda update: self._arrive(index, update), self.created,
                                               keep_state=keep_state)

    def snapshot(self, index: int = 0) -> Snapshot:
        """Where choice ``index`` stands now that it has finished (it was started with
        ``keep_state``): its prompt and every generated character, a stop string included.

        Raises:
            ValueError: the choice has not finished normally or kept no state.
        """
        choice = self.choices[index]
        if choice.stream is not None:
            return choice.stream.snapshot()
        if choice.start is None:
            raise ValueError(f"choice {index} kept no state")
        return choice.start.snapshot()

    def start_from(self, prefill: Prefill, params: SamplingParams) -> None:
        """Generate one stream from a state already computed (a prediction session's)."""
        self.generation.reserve()
        choice = Choice(0, "")
        self.choices.append(choice)
        self.open.add(0)
        choice.stream = self.generation.open_stream(prefill, params, lambda update: self._arrive(0, update))

    def _arrive(self, index: int, update: StreamUpdate) -> None:
        """A listener: on the event loop (the service's dispatcher runs every listener there)."""
        self._arrived.append((index, update))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_updates(self, timeout: float | None = None) -> dict[int, StreamUpdate]:
        """Wait for at least one update, then merge all that are waiting, per choice index.

        Raises:
            TimeoutError: nothing arrived within ``timeout`` seconds.
        """
        if not self._arrived:
            waiter = self._waiter = self.loop.create_future()
            expiry = None if timeout is None else self.loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if expiry is not None:
                    expiry.cancel()
        arrived, self._arrived = self._arrived, []
        merged: dict[int, StreamUpdate] = {}
        for index, update in arrived:
            if index < 0:  # the wake-up of :meth:`client_gone`
                continue
            into = merged.get(index)
            if into is None:  # a copy: the tokens of later updates are added to its list
                merged[index] = StreamUpdate(list(update.tokens), update.finish_reason, update.error)
                continue
            into.tokens.extend(update.tokens)
            into.finish_reason = update.finish_reason or into.finish_reason
            into.error = update.error or into.error
        for index, update in merged.items():
            choice = self.choices[index]
            choice.tokens.extend(update.tokens)
            if update.final:
                self.open.discard(index)
                choice.finish_reason = update.finish_reason
        return merged

    def cancel(self) -> None:
        """Stop every stream of the request (a no-op for finished ones)."""
        for choice in self.choices:
            if choice.stream is not None:
                choice.stream.cancel()
        self.open.clear()

    def client_gone(self) -> None:
        """The client disconnected: cancel everything and wake whoever waits for updates."""
        self.cancel()
        self._arrive(-1, StreamUpdate())


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
