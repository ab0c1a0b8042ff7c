"""How long to wait before retrying a transient fault (SPEC §3.3).

Exponential backoff with full jitter (the AWS Architecture Blog's "Full
Jitter", which spreads many clients best), with a server's ``Retry-After``
taken as a minimum. A value object: randomness is passed in, and nothing
here sleeps.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Final

__all__ = ["DEFAULT_RETRIES", "MAX_RETRY_AFTER", "RetryPolicy"]

#: Retries after the first attempt, by default (SPEC §2.1 ``retries=...``).
DEFAULT_RETRIES: Final = 5
#: The longest ``Retry-After`` honoured, in seconds: a hostile or confused
#: server must not park a download (or a whole batch) for hours.
MAX_RETRY_AFTER: Final = 300.0
# 2.0 ** 1024 overflows a float; any cap is reached long before 2 ** 64.
_MAX_EXPONENT: Final = 64


def _random() -> float:
    """``random.random()``, importing random at the first delay drawn.

    Most downloads never retry; random (with hashlib's sha512 and bisect)
    stays off their import path. Same global generator: ``random.seed``
    still applies.
    """
    import random  # noqa: PLC0415 - see the docstring

    return random.random()


class RetryPolicy:
    """Backoff policy: how many retries, and how long to wait before each.

    Parameters
    ----------
    retries : int
        Retries allowed after the first attempt (0: never retry).
    base : float
        Seconds; the wait bound before retry ``n`` is ``base * 2 ** n``.
    cap : float
        Seconds; the wait bound never exceeds this.
    rng : callable, optional
        Returns a float in ``[0, 1)``; the default source of jitter, used
        when :meth:`delay` is not given one (by default ``random.random``,
        called through a function that imports :mod:`random` on first
        use). Not part of equality or repr.

    Raises
    ------
    ValueError
        Naming the field, when ``retries``, ``base`` or ``cap`` is negative.

    Examples
    --------
    >>> policy = RetryPolicy(retries=2, base=0.5, cap=20.0)
    >>> policy.delay(1, rng=lambda: 0.5)
    0.5
    >>> [policy.exhausted(n) for n in (1, 2, 3)]
    [False, False, True]
    """

    # A plain immutable class: dataclasses would import inspect (SPEC §6).
    __slots__ = ("base", "cap", "retries", "rng")
    # Declared for type checkers only: the values live in the slots above.
    retries: int
    base: float
    cap: float
    rng: Callable[[], float]

    def __init__(
        self,
        retries: int = DEFAULT_RETRIES,
        base: float = 0.5,
        cap: float = 20.0,
        rng: Callable[[], float] = _random,
    ) -> None:
        for name, value in (("retries", retries), ("base", base), ("cap", cap)):
            if value < 0:
                raise ValueError(f"RetryPolicy.{name} must be >= 0, not {value!r}")
        for name, field in (("retries", retries), ("base", base), ("cap", cap), ("rng", rng)):
            object.__setattr__(self, name, field)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"RetryPolicy is immutable: cannot set {name!r}")

    def _key(self) -> tuple[int, float, float]:
        return (self.retries, self.base, self.cap)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RetryPolicy):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"RetryPolicy(retries={self.retries!r}, base={self.base!r}, cap={self.cap!r})"

    def delay(
        self,
        attempt: int,
        rng: Callable[[], float] | None = None,
        retry_after: float | None = None,
    ) -> float:
        """Seconds to wait before retry number ``attempt``.

        Parameters
        ----------
        attempt : int
            The retry about to be made, counted from 1 (0 is accepted).
        rng : callable, optional
            Returns a float in ``[0, 1)``; defaults to the policy's ``rng``.
        retry_after : float, optional
            The server's ``Retry-After`` in seconds: the wait is at least
            this, once capped at :data:`MAX_RETRY_AFTER`.

        Returns
        -------
        float
            ``rng() * min(cap, base * 2 ** attempt)``, raised to the capped
            ``retry_after`` when that is larger.

        Raises
        ------
        ValueError
            When ``attempt`` is negative.
        """
        if attempt < 0:
            raise ValueError(f"retry attempt must be >= 0, not {attempt!r}")
        bound = min(self.cap, self.base * 2.0 ** min(attempt, _MAX_EXPONENT))
        wait = (rng or self.rng)() * bound
        if retry_after is not None and retry_after > 0:
            wait = max(wait, min(retry_after, MAX_RETRY_AFTER))
        return wait

    def exhausted(self, attempt: int) -> bool:
        """Whether retry number ``attempt`` (counted from 1) is beyond the budget.

        Parameters
        ----------
        attempt : int
            The retry about to be made.

        Returns
        -------
        bool
            ``attempt > retries``.
        """
        return attempt > self.retries
