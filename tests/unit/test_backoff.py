"""Retry backoff (domain/retry.py), over every Backoff its validators accept: the ceiling never decreases with
the attempt and never passes max_seconds (a zero base means no delay at all); with jitter the delay lies in
[ceiling/2, ceiling] and is the same for the same (seed, attempt); parse either gives a working Backoff or
raises InvalidInput, never anything else. The hashes behind jitter stay in [0, 1) and [0, n)."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from domain.errors import InvalidInput
from domain.retry import MAX_DELAY_SECONDS, MAX_FACTOR, Backoff, unit_below, unit_hash

# Anything a client could send, JSON's huge numbers and infinities included.
numbers = st.one_of(st.floats(), st.integers(-10, 10**400), st.sampled_from([0, 0.0, 1, 2, 1e308]))


def between(low: int, high: int) -> st.SearchStrategy[float | int]:
    """Mostly values the validators accept (the bounds included), sometimes anything at all above `low`."""
    return st.one_of(st.floats(low, high), st.integers(low, high), st.sampled_from([low, 1, 2, high]),
                     st.floats(low, high), st.floats(min_value=low) | st.integers(low, 10**400))


@st.composite
def any_backoff(draw: st.DrawFn) -> Backoff:
    raw = {"base_seconds": draw(between(0, MAX_DELAY_SECONDS)), "factor": draw(between(1, MAX_FACTOR)),
           "max_seconds": draw(between(0, MAX_DELAY_SECONDS)),
           "jitter": draw(st.booleans())}
    try:
        return Backoff.parse(raw)
    except InvalidInput:
        assume(False)
        raise


attempts = st.integers(1, 10_000)
seeds = st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(backoff=any_backoff(), a=attempts, b=attempts)
def test_ceiling_never_decreases_and_stays_under_the_cap(backoff: Backoff, a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert 0 <= backoff.ceiling(low) <= backoff.ceiling(high) <= backoff.max_seconds
    assert backoff.ceiling(1) == min(backoff.base_seconds, backoff.max_seconds)
    if backoff.base_seconds == 0:
        assert backoff.ceiling(high) == 0, "a zero base must never turn into a delay"


@settings(max_examples=200, deadline=None)
@given(backoff=any_backoff(), attempt=attempts, seed=seeds)
def test_delay_lies_between_half_the_ceiling_and_the_ceiling(backoff: Backoff, attempt: int, seed: str) -> None:
    ceiling = backoff.ceiling(attempt)
    delay = backoff.delay(attempt, seed=seed)
    if backoff.jitter:
        assert timedelta(seconds=ceiling / 2) <= delay <= timedelta(seconds=ceiling)
    else:
        assert delay == timedelta(seconds=ceiling)


@settings(max_examples=200, deadline=None)
@given(backoff=any_backoff(), attempt=attempts, seed=seeds)
def test_jitter_is_stable_for_the_same_seed_and_attempt(backoff: Backoff, attempt: int, seed: str) -> None:
    twin = Backoff.parse(backoff.as_dict())
    assert twin == backoff
    assert backoff.delay(attempt, seed=seed) == twin.delay(attempt, seed=seed)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.one_of(st.text(max_size=20), st.integers()), max_size=4))
def test_unit_hash_is_in_the_unit_interval_and_deterministic(parts: list[object]) -> None:
    value = unit_hash(*parts)
    assert 0 <= value < 1
    assert unit_hash(*parts) == value


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 10**12) | st.sampled_from([1, 2, 86400 * 10**6]),
       parts=st.lists(st.one_of(st.text(max_size=20), st.integers()), max_size=4))
def test_unit_below_is_an_integer_below_n_and_deterministic(n: int, parts: list[object]) -> None:
    value = unit_below(n, *parts)
    assert 0 <= value < n and unit_below(n, *parts) == value


@settings(max_examples=200, deadline=None)
@given(raw=st.dictionaries(st.sampled_from(["base_seconds", "factor", "max_seconds", "jitter", "other"]),
                           st.one_of(numbers, st.text(max_size=5), st.none(), st.booleans())))
def test_parse_gives_a_working_backoff_or_invalid_input(raw: dict[str, object]) -> None:
    try:
        backoff = Backoff.parse(raw)
    except InvalidInput as refused:
        assert refused.errors.keys() == {"backoff"}
        return
    assert isinstance(backoff.delay(1000, seed="job"), timedelta)
