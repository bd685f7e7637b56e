"""Stop strings: held-back text, exclusion of the stop string, earliest match wins."""

from __future__ import annotations

from service.engine.stops import StopMatcher, Token


def feed(stops: tuple[str, ...], text: str) -> tuple[list[str], bool]:
    """Release per pushed character (joined), and whether a stop string ended the text."""
    matcher = StopMatcher(stops)
    released = []
    for i, char in enumerate(text):
        released.append("".join(t.text for t in matcher.push(Token(i, char))))
        if matcher.stopped:
            return released, True
    released.append("".join(t.text for t in matcher.flush()))
    return released, False


def test_no_stops_releases_every_character_at_once():
    assert feed((), "abc") == (["a", "b", "c", ""], False)


def test_stop_string_is_excluded_and_ends_the_stream():
    released, stopped = feed(("lo w",), "hello world")
    assert stopped
    assert "".join(released) == "hel"
    # "l" was held back from position 2 on: it might have started "lo w"
    assert released[:3] == ["h", "e", ""]


def test_held_back_text_is_released_when_it_cannot_match():
    released, stopped = feed(("ab",), "aac")
    assert not stopped
    assert released == ["", "a", "ac", ""]


def test_overlapping_prefix_still_matches():
    released, stopped = feed(("ab",), "aab")
    assert stopped and "".join(released) == "a"


def test_earliest_of_several_stops_wins():
    released, stopped = feed(("cd", "bcdx"), "abcdx")
    assert stopped and "".join(released) == "ab"


def test_unfinished_prefix_is_flushed_at_the_end():
    released, stopped = feed(("xyz",), "abxy")
    assert not stopped
    assert "".join(released) == "abxy" and released[-1] == "xy"


def test_released_tokens_keep_their_logprobs():
    matcher = StopMatcher(("b",))
    out = matcher.push(Token(0, "a", -0.5, (("a", -0.5),)))
    assert out == [Token(0, "a", -0.5, (("a", -0.5),))]
    assert matcher.push(Token(1, "b", -1.0)) == [] and matcher.stopped
