"""State tokens against plain `tlstm serve` replicas: exact continuation, forks, sessions that
move between servers, and every kind of bad token, refused with the reason.

Two servers with the same key and the same package stand for two replicas; others differ in
one respect each (another key, another package, another decoding, no key).
"""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from itsdangerous import Signer
from websockets.exceptions import ConnectionClosed

from service.engine.state_token import (
    PREFIX,
    SALT,
    Snapshot,
    StateCodec,
    redact,
    rng_from_state,
    rng_state,
)

from . import state_checks as checks
from .conftest import Packages
from .live import LiveServer, ServeProcess, live_server, make_settings

KEY = "k" * 16 + "-test-state-key-0123456789"
OTHER_KEY = "o" * 16 + "-another-state-key-9876543210"


@pytest.fixture(scope="module")
def replicas(packages: Packages) -> Iterator[tuple[LiveServer, LiveServer]]:
    with live_server(make_settings(packages.root, state_key=KEY)) as one, \
            live_server(make_settings(packages.root, state_key=KEY)) as two:
        yield one, two


@pytest.fixture(scope="module")
def token(replicas: tuple[LiveServer, LiveServer]) -> str:
    body, _ = checks.complete(replicas[0].url, {"prompt": checks.PROMPT, "max_tokens": 9, "temperature": 0.7,
                                                "seed": 2, "return_state": True})
    return body["state"]


@pytest.mark.parametrize("params", checks.STREAMS, ids=["greedy", "seeded", "filtered-penalized"])
def test_continuing_on_another_replica_equals_one_uninterrupted_run(replicas, params):
    one, two = replicas
    checks.check_continuation(one.url, two.url, one.url, params)
    checks.check_continuation(two.url, two.url, one.url, params, n=1, m=40)  # the same replica, one character


@pytest.mark.parametrize("params", checks.STREAMS[:2], ids=["greedy", "seeded"])
def test_streamed_continuation_carries_the_state_in_its_last_chunk(replicas, params):
    one, two = replicas
    checks.check_continuation(one.url, two.url, two.url, params, n=30, m=17, stream=True)


def test_one_token_twice_forks_the_stream(replicas):
    one, two = replicas
    params = checks.STREAMS[1]
    token = checks.check_continuation(one.url, two.url, one.url, params, n=12, m=25)
    first = checks.check_fork(one.url, two.url, token, params, m=25)
    again = checks.check_fork(two.url, one.url, token, params, m=25)
    assert first == again
    # a seed given with the token starts a generator of its own: another branch of the text
    seeded, _ = checks.complete(one.url, {"prompt": "", "state": token, "max_tokens": 25, "temperature": 0.9, "seed": 99})
    assert seeded["choices"][0]["text"] != first


def test_new_prompt_is_read_after_the_text_of_the_token(replicas):
    one, two = replicas
    a, _ = checks.complete(one.url, {"prompt": checks.PROMPT, "max_tokens": 10, "temperature": 0, "return_state": True})
    generated = a["choices"][0]["text"]
    body = {"prompt": " ij", "state": a["state"], "max_tokens": 15, "temperature": 0, "logprobs": 1,
            "return_state": True}
    b, _ = checks.complete(one.url, body)
    again, _ = checks.complete(two.url, body)
    assert checks.pieces(b) == checks.pieces(again)  # the same computation on any replica
    # against reading the whole text at once: prefill and steps round differently, so only close
    whole, _ = checks.complete(one.url, {"prompt": checks.PROMPT + generated + " ij", "max_tokens": 15,
                                         "temperature": 0, "logprobs": 1})
    text, logprobs, _ = checks.pieces(b)
    assert text == whole["choices"][0]["text"]
    np.testing.assert_allclose(logprobs, checks.pieces(whole)[1], atol=1e-5)
    assert b["usage"]["prompt_tokens"] == 3
    # the new token stands for all of it: continuing it equals one run over the whole text
    c, _ = checks.complete(two.url, {"prompt": "", "state": b["state"], "max_tokens": 5, "temperature": 0})
    d, _ = checks.complete(one.url, {"prompt": " ij", "state": a["state"], "max_tokens": 20, "temperature": 0})
    assert text + c["choices"][0]["text"] == d["choices"][0]["text"]


def test_zero_tokens_and_stop_strings_keep_the_whole_text(replicas):
    one, two = replicas
    # max_tokens 0: the token stands for the prompt alone
    a, _ = checks.complete(one.url, {"prompt": checks.PROMPT, "max_tokens": 0, "return_state": True})
    b, _ = checks.complete(two.url, {"prompt": "", "state": a["state"], "max_tokens": 20, "temperature": 0, "logprobs": 1})
    whole, _ = checks.complete(one.url, {"prompt": checks.PROMPT, "max_tokens": 20, "temperature": 0, "logprobs": 1})
    assert checks.pieces(b) == checks.pieces(whole)
    # a stop string ends the text the client sees; the model has read up to it (it is part of the state)
    plain, _ = checks.complete(one.url, {"prompt": "a", "max_tokens": 40, "temperature": 0})
    text = plain["choices"][0]["text"]
    stop = text[5]
    cut = text.index(stop)
    a, _ = checks.complete(one.url, {"prompt": "a", "max_tokens": 40, "temperature": 0, "stop": stop, "return_state": True})
    assert a["choices"][0]["finish_reason"] == "stop" and a["choices"][0]["text"] == text[:cut]
    b, _ = checks.complete(two.url, {"prompt": "", "state": a["state"], "max_tokens": 40 - cut - 1, "temperature": 0})
    assert b["choices"][0]["text"] == text[cut + 1:]


def test_a_session_moves_to_another_replica(replicas):
    one, two = replicas
    checks.check_session_resume(one.ws_url, two.ws_url)


def test_a_completion_token_opens_a_session(replicas, token):
    one, two = replicas
    with checks.session(two.ws_url, f"model=chars&top_k=2&state={token}") as (ws, hello):
        assert hello["position"] == len(checks.PROMPT) + 9
        predictions = checks.append(ws, "ab")
        assert [p["position"] for p in predictions] == [hello["position"], hello["position"] + 1]
        assert all(p["logprob"] is not None for p in predictions)  # the text before them was read
        state = checks.snapshot(ws)
    # and the session's token continues as a completion, on the other replica
    body, _ = checks.complete(one.url, {"prompt": "", "state": state["state"], "max_tokens": 6, "temperature": 0})
    assert len(body["choices"][0]["text"]) == 6


# ---------------------------------------------------------------------- bad tokens
def _other_package(packages: Packages, root: Path) -> Path:
    """The same packages, with a chars package whose manifest differs (a re-export)."""
    for name in ("chars", "digits", "names"):
        shutil.copytree(packages.root / name, root / name)
    manifest = root / "chars" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["created"] = "2000-01-01T00:00:00+00:00"
    manifest.write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def others(packages: Packages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveServer]]:
    root = _other_package(packages, tmp_path_factory.mktemp("other-package"))
    with live_server(make_settings(packages.root, state_key=OTHER_KEY)) as other_key, \
            live_server(make_settings(root, state_key=KEY)) as other_package, \
            live_server(make_settings(packages.root, state_key=KEY, decode="simple")) as simple:
        yield {"key": other_key, "package": other_package, "simple": simple}


def _digest(path: Path) -> str:
    return hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()


def test_bad_tokens_are_refused_naming_the_reason(replicas, others, token, packages):
    one, _ = replicas
    url = one.url

    def refused(state: str, where: str = url) -> dict:
        error = checks.error_of(where, {"prompt": "", "state": state, "max_tokens": 3})
        assert error["param"] == "state" and error["type"] == "invalid_request_error"
        assert state not in error["message"] or len(state) < 8  # a token is never echoed back
        return error

    payload = token.split(".")[1]
    middle = len(PREFIX) + len(payload) // 2
    tampered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1:]
    assert refused(tampered)["code"] == "state_bad_signature"
    assert "altered, or signed with another key" in refused(tampered)["message"]
    assert refused(token[: len(token) // 2])["code"] == "state_truncated"
    assert refused(token[:-5])["code"] == "state_truncated"
    assert refused(token[: len(PREFIX) + len(payload)])["code"] == "state_truncated"
    assert refused("ts0" + token[3:])["code"] == "state_outdated"
    assert "format version 0; this server reads version 1" in refused("ts0" + token[3:])["message"]
    assert refused("hello")["code"] == "state_malformed"
    codec = one.service.engine.model("chars").state_tokens()
    too_large = refused(PREFIX + "A" * codec.max_chars)
    assert too_large["code"] == "state_too_large" and str(codec.max_chars) in too_large["message"]
    # signed with another key (a replica that does not share TLSTM_STATE_KEY)
    assert refused(token, others["key"].url)["code"] == "state_bad_signature"
    # made by another package: the message names both
    foreign = refused(token, others["package"].url)
    assert foreign["code"] == "state_other_package"
    mine, theirs = _digest(packages.root / "chars"), _digest(others["package"].service.engine.model("chars").package.path)
    assert foreign["message"] == (f"state was made by package chars sha256:{mine[:12]}…, this server has "
                                  f"chars sha256:{theirs[:12]}…")
    # made with incremental decoding, read by a server that decodes the simple way
    other_decoding = refused(token, others["simple"].url)
    assert other_decoding["code"] == "state_other_decoding"
    assert "made with incremental decoding" in other_decoding["message"]
    # validly signed, but not a state: refused without running anything (no pickle is ever read)
    signer = Signer(KEY.encode(), salt=SALT, sep=".", key_derivation="hmac", digest_method=hashlib.sha256)

    class Boom:
        def __reduce__(self):
            return (print, ("unpickled!",))

    for body in (pickle.dumps(Boom()), b"\x05\x00\x00\x00{}{}{", b""):
        forged = signer.sign(PREFIX + base64.urlsafe_b64encode(body).rstrip(b"=").decode()).decode()
        assert refused(forged)["code"] == "state_malformed"


def test_state_needs_one_prompt_and_no_echo(replicas, token):
    one, _ = replicas
    error = checks.error_of(one.url, {"prompt": ["a", "b"], "return_state": True})
    assert error == {"message": "prompt: with state or return_state, expected one prompt (a string)",
                     "type": "invalid_request_error", "param": "prompt", "code": "invalid_value"}
    assert checks.error_of(one.url, {"prompt": "a", "state": token, "echo": True})["code"] == "unsupported_value"
    assert checks.error_of(one.url, {"prompt": "", "max_tokens": 3})["param"] == "prompt"  # no state: a prompt


def test_bad_tokens_refuse_a_session(replicas, others, token):
    one, _ = replicas
    for server, state, code in ((one, token[:-9], "state_truncated"), (others["package"], token, "state_other_package")):
        with checks.session(server.ws_url, f"model=chars&state={state}") as (ws, message):
            assert message["type"] == "error" and message["error"]["code"] == code
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
            assert info.value.rcvd.code == 1008
    assert one.service.engine.sessions.count() == 0


def test_without_a_key_state_tokens_are_off_and_say_so(server, token):
    message = ("state tokens are off on this server: set TLSTM_STATE_KEY (the same secret on every replica) "
               "to use return_state, state and snapshots")
    expected = {"message": message, "type": "invalid_request_error", "param": "state", "code": "state_tokens_disabled"}
    assert checks.error_of(server.url, {"prompt": "a", "return_state": True}) == expected
    assert checks.error_of(server.url, {"prompt": "a", "state": token}) == expected
    with checks.session(server.ws_url) as (ws, _):
        checks.append(ws, "ab")
        ws.send(json.dumps({"type": "snapshot"}))
        assert checks.receive(ws) == {"type": "error", "error": expected}
        assert checks.append(ws, "c")[0]["position"] == 2  # the session goes on
    with checks.session(server.ws_url, f"model=chars&state={token}") as (ws, message):
        assert message == {"type": "error", "error": expected}


# ---------------------------------------------------------------------- the format itself
def test_tokens_are_small_and_bounded(replicas, token):
    codec = replicas[0].service.engine.model("chars").state_tokens()
    assert len(token) <= codec.max_chars < 4 * 4096
    snapshot = codec.decode(token)
    assert snapshot.position == len(checks.PROMPT) + 9 and snapshot.pending is not None and snapshot.logits is None
    layout = {name: shape for name, shape in codec.layout}
    assert {name: value.shape[1:] for name, value in snapshot.state.items()} == layout
    assert all(value.dtype == np.float32 and value.shape[0] == 1 for value in snapshot.state.values())


def test_codec_round_trip_is_exact_and_bound():
    rng = np.random.default_rng(0)
    layout = [("state_h_in", (3, 4)), ("state_c_in", (3, 4)), ("state_h_ahead1_in", (2, 4))]
    codec = StateCodec(b"secret" * 6, model="m", package="sha256:" + "0" * 64, decoding="incremental",
                       layout=layout, vocab_size=5)
    state = {name: rng.standard_normal((1, *shape)).astype(np.float32) for name, shape in layout}
    sampler = np.random.default_rng(7)
    sampler.random(3)
    snapshot = Snapshot(state, 12, None, rng.standard_normal(5).astype(np.float32), rng_state(sampler), (0, 3), ((3, 2),))
    back = codec.decode(codec.encode(snapshot))
    for name in state:
        np.testing.assert_array_equal(back.state[name], state[name])
    np.testing.assert_array_equal(back.logits, snapshot.logits)
    assert (back.position, back.pending, back.seen, back.counts) == (12, None, (0, 3), ((3, 2),))
    assert back.sampler is not None
    continued = rng_from_state(back.sampler)
    np.testing.assert_array_equal(continued.random(5), sampler.random(5))  # draws on exactly
    other = StateCodec(b"secret" * 6, model="m", package="sha256:" + "1" * 64, decoding="incremental",
                       layout=layout, vocab_size=5)
    with pytest.raises(Exception, match="state was made by package m sha256:000000000000…"):
        other.decode(codec.encode(snapshot))


def test_tokens_never_reach_the_logs(packages, token):
    assert redact(f'"WebSocket /v1/stream?model=chars&state={token}" [accepted]') == (
        '"WebSocket /v1/stream?model=chars&state=<state>" [accepted]')
    assert token not in redact(f"got {token} here")
    serve = ServeProcess(packages.root, {"TLSTM_STATE_KEY": KEY})
    try:
        serve.wait_ready()
        url = serve.url
        body, _ = checks.complete(url, {"prompt": "ab", "max_tokens": 4, "return_state": True})
        with checks.session(url.replace("http", "ws"), f"model=chars&state={body['state']}") as (ws, hello):
            assert hello["type"] == "ready"
        checks.error_of(url, {"prompt": "", "state": body["state"][:-4], "max_tokens": 2})
        with checks.session(url.replace("http", "ws"), f"model=chars&state={token}x") as (ws, hello):
            assert hello["type"] == "error"
    finally:
        serve.terminate()
        serve.proc.wait(30)
        serve.close()
    logged = "".join(serve.lines)
    assert "WebSocket /v1/stream?model=chars&state=<state>" in logged  # the line is there, redacted
    for secret in (body["state"], token, body["state"].split(".")[1][:40], KEY):
        assert secret not in logged
    assert not re.search(r"ts1\.[A-Za-z0-9_-]{20,}", logged)
