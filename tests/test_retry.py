"""Backoff policy (SPEC §3.3): randomness injected, nothing sleeps."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyvo_dl._retry import DEFAULT_RETRIES, MAX_RETRY_AFTER, RetryPolicy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


def test_defaults() -> None:
    assert DEFAULT_RETRIES == 5
    assert RetryPolicy() == RetryPolicy(retries=5, base=0.5, cap=20.0)
    assert MAX_RETRY_AFTER == 300.0


@pytest.mark.parametrize(
    ("attempt", "jitter", "retry_after", "expected"),
    [
        (0, 1.0, None, 0.5),
        (1, 1.0, None, 1.0),
        (1, 0.5, None, 0.5),
        (3, 1.0, None, 4.0),
        (5, 1.0, None, 16.0),
        (6, 1.0, None, 20.0),
        (10, 0.25, None, 5.0),
        (10**6, 1.0, None, 20.0),
        (2, 0.0, None, 0.0),
        # Retry-After is a minimum, capped so a server cannot park us.
        (2, 0.0, 7.0, 7.0),
        (2, 0.99, 1.0, 1.98),
        (2, 0.0, 1e9, MAX_RETRY_AFTER),
        (2, 0.0, math.inf, MAX_RETRY_AFTER),
        (2, 0.5, 0.0, 1.0),
        (2, 0.5, -3.0, 1.0),
        (2, 0.5, math.nan, 1.0),
    ],
)
def test_delay(attempt: int, jitter: float, retry_after: float | None, expected: float) -> None:
    policy = RetryPolicy()
    assert policy.delay(attempt, fixed(jitter), retry_after) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("policy", "attempt", "expected"),
    [
        (RetryPolicy(base=1.0, cap=100.0), 4, 16.0),
        (RetryPolicy(base=1.0, cap=10.0), 4, 10.0),
        (RetryPolicy(base=0.0), 4, 0.0),
        (RetryPolicy(cap=0.0), 4, 0.0),
    ],
)
def test_delay_bounds(policy: RetryPolicy, attempt: int, expected: float) -> None:
    assert policy.delay(attempt, fixed(1.0)) == expected


def test_rng_is_called_once_per_delay() -> None:
    calls = []

    def rng() -> float:
        calls.append(1)
        return 0.5

    RetryPolicy().delay(3, rng, retry_after=100.0)
    assert len(calls) == 1


def test_policy_rng_is_the_default_and_an_argument_overrides_it() -> None:
    policy = RetryPolicy(rng=fixed(0.5))
    assert policy.delay(1) == 0.5
    assert policy.delay(1, fixed(0.0)) == 0.0
    assert policy.delay(1, retry_after=3.0) == 3.0
    # rng is not part of the value: two policies with other sources are equal.
    assert policy == RetryPolicy()
    assert "rng" not in repr(policy)


def test_default_random_source_stays_within_the_bound() -> None:
    policy = RetryPolicy()
    delays = [policy.delay(2) for _ in range(200)]
    assert all(0.0 <= delay < 2.0 for delay in delays)


def test_default_random_source_is_randoms_global_generator() -> None:
    state = random.getstate()
    try:
        random.seed(6)
        expected = random.random() * 2.0
        random.seed(6)
        assert RetryPolicy().delay(2) == expected
    finally:
        random.setstate(state)


def test_random_is_imported_at_the_first_default_delay() -> None:
    code = textwrap.dedent(
        """
        import sys
        before = set(sys.modules)
        from pyvo_dl._retry import RetryPolicy
        policy = RetryPolicy()
        policy.delay(3, rng=lambda: 0.5)
        print("random" in set(sys.modules) - before)
        policy.delay(3)
        print("random" in set(sys.modules) - before)
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # -S: a site-packages .pth hook may import random before us.
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert result.stdout.split() == ["False", "True"]


@pytest.mark.parametrize(
    ("retries", "attempt", "exhausted"),
    [
        (5, 1, False),
        (5, 5, False),
        (5, 6, True),
        (0, 1, True),
        (0, 0, False),
        (1, 1, False),
        (1, 2, True),
    ],
)
def test_exhausted(retries: int, attempt: int, exhausted: bool) -> None:
    assert RetryPolicy(retries=retries).exhausted(attempt) is exhausted


@pytest.mark.parametrize("field", ["retries", "base", "cap"])
def test_negative_settings_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=f"RetryPolicy.{field}"):
        RetryPolicy(**{field: -1})


def test_negative_attempt_is_refused() -> None:
    with pytest.raises(ValueError, match="-1"):
        RetryPolicy().delay(-1, fixed(0.5))


def test_policy_is_frozen() -> None:
    with pytest.raises(AttributeError, match="immutable"):
        RetryPolicy().retries = 3  # type: ignore[misc]


@pytest.mark.property
@given(
    st.integers(0, 10_000),
    st.floats(0.0, 1.0, exclude_max=True),
    st.one_of(st.none(), st.floats(allow_nan=True)),
    st.floats(0.0, 100.0),
    st.floats(0.0, 1000.0),
)
def test_delay_is_bounded(
    attempt: int, jitter: float, retry_after: float | None, base: float, cap: float
) -> None:
    delay = RetryPolicy(base=base, cap=cap).delay(attempt, fixed(jitter), retry_after)
    floor = 0.0
    if retry_after is not None and retry_after > 0:
        floor = min(retry_after, MAX_RETRY_AFTER)
    assert floor <= delay <= max(cap, floor)
