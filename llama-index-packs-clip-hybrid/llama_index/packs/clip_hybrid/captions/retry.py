"""Retries of API calls, one mechanism for captions and caption vectors (tenacity).

A failed call is classified (:func:`.errors.classify_error`): retryable errors (429, 5xx,
timeouts, broken responses) are tried again after exponential backoff with full jitter,
or after what the service's ``Retry-After`` asks (capped); errors no wait cures (a bad
key, an exhausted quota, an unknown model) and non-retryable ones are not.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from .base import CaptionError

T = TypeVar("T")


@dataclass
class RetryPolicy:
    """When and how long to wait before the next attempt.

    Attempt n (from 0) waits uniform(0, min(backoff_max, backoff_base * 2**n)) seconds,
    or the service's Retry-After (at most ``max_retry_after``, plus up to 10% jitter).
    """

    max_retries: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    max_retry_after: float = 120.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.max_retry_after, retry_after) * (1.0 + 0.1 * self.rng.random())
        return self.rng.uniform(0.0, min(self.backoff_max, self.backoff_base * 2**attempt))

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        after = error.retry_after if isinstance(error, CaptionError) else None
        return self.delay(state.attempt_number - 1, after)

    def _kwargs(
        self, give_up: Callable[[], bool], on_retry: Callable[[], None] | None
    ) -> dict[str, object]:
        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, CaptionError) and exc.retryable and not exc.fatal

        def before_sleep(state: RetryCallState) -> None:
            if on_retry is not None:
                on_retry()

        return {
            "stop": stop_after_attempt(1 + self.max_retries),
            "retry": retry_if_exception(lambda exc: retryable(exc) and not give_up()),
            "wait": self._wait,
            "before_sleep": before_sleep,
            "reraise": True,
        }

    async def acall(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        give_up: Callable[[], bool] = lambda: False,
        on_retry: Callable[[], None] | None = None,
    ) -> T:
        """``await attempt()`` until it succeeds, raises what is not retried, or the
        attempts run out (the last :class:`CaptionError` is raised). ``give_up()`` is asked
        before each retry (another request found the key revoked, say)."""
        result: T = await AsyncRetrying(**self._kwargs(give_up, on_retry))(attempt)  # type: ignore[arg-type]
        return result

    def call(
        self,
        attempt: Callable[[], T],
        *,
        give_up: Callable[[], bool] = lambda: False,
        on_retry: Callable[[], None] | None = None,
    ) -> T:
        """The blocking :meth:`acall`."""
        result: T = Retrying(**self._kwargs(give_up, on_retry))(attempt)  # type: ignore[arg-type]
        return result
