"""Which sink errors are transient, and the backoff that retries them
(the policy of ``transforms.sinks.dead_letter``'s module docstring)."""

from __future__ import annotations

from google.api_core import exceptions
from google.api_core.retry import Retry

# How long a sink keeps retrying one batch before it dead-letters it.
RETRY_DEADLINE_SECONDS = 600.0


_TRANSIENT_TYPES = (
    exceptions.TooManyRequests,
    exceptions.InternalServerError,
    exceptions.BadGateway,
    exceptions.ServiceUnavailable,
    exceptions.GatewayTimeout,
    exceptions.DeadlineExceeded,
    ConnectionError,
)


_TRANSIENT_REASONS = frozenset(
    {"rateLimitExceeded", "backendError", "internalError", "jobBackendError", "jobRateLimitExceeded"}
)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, _TRANSIENT_TYPES):
        return True
    try:
        import requests

        if isinstance(error, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # pragma: no cover - requests comes with the Google clients
        pass
    reasons = {e.get("reason") for e in getattr(error, "errors", None) or () if isinstance(e, dict)}
    return bool(reasons & _TRANSIENT_REASONS)


def sink_retry(counter=None, deadline: float = RETRY_DEADLINE_SECONDS, initial: float = 1.0) -> Retry:
    """The client library's Retry for sink writes; ``counter`` counts each retried error."""
    on_error = None if counter is None else (lambda error: counter.inc())
    return Retry(
        predicate=is_transient, initial=initial, maximum=60.0, multiplier=2.0, timeout=deadline, on_error=on_error
    )
