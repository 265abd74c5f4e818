"""The PII key: where the workers read it, and which version hashed a row.

The job graph carries a ``PiiKeySource`` (where to read the key), never the
key: each parse ``DoFn`` resolves it in ``setup()``, on the worker, once per
process. The key's ``repr`` hides the secret, so it is not logged by
accident.

Sources, in order: Secret Manager (``--pii-key-secret
projects/P/secrets/S/versions/V``), the ``FUNNEL_PII_KEY`` environment
variable, then, on local runners only, a public development key. A
non-local runner without ``--pii-key-secret`` is refused when its options
are parsed (``pipelines.common.pii_key_source``): the environment of a
Dataflow worker is not the launcher's, and the development key is public.

``pii_key_version`` (a column of the bronze and silver tables that hold
hashes) names the key: the resolved Secret Manager version
(``secrets/S/versions/7``, even when ``latest`` was asked for),
``FUNNEL_PII_KEY_VERSION`` or a fingerprint of an environment key
(``env:`` + 12 hex digits of a SHA-256 over a fixed prefix and the key;
it identifies the key without revealing it), or ``dev``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

KEY_ENV = "FUNNEL_PII_KEY"
KEY_VERSION_ENV = "FUNNEL_PII_KEY_VERSION"
DEV_KEY = b"funnel-lakehouse-local-dev-key"
DEV_KEY_VERSION = "dev"
SECRET_VERSION_PATTERN = re.compile(r"^projects/[^/]+/secrets/[^/]+/versions/[^/]+$")
# Runners that execute on this machine, where the development key is allowed.
LOCAL_RUNNERS = frozenset(
    {"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner", "PrismRunner"}
)


class PiiKeyError(ValueError):
    """No usable PII key: refused, missing or unreadable."""


@dataclass(frozen=True)
class PiiKey:
    secret: bytes = field(repr=False)
    version: str


def _secret_manager_client():
    from google.cloud import secretmanager

    return secretmanager.SecretManagerServiceClient()


@dataclass(frozen=True)
class PiiKeySource:
    """Where to read the key (picklable; holds no key). ``client_factory``
    makes the Secret Manager client (tests inject a fake)."""

    secret_version: str | None = None
    allow_dev_key: bool = True
    client_factory: Callable = _secret_manager_client

    def __post_init__(self):
        if self.secret_version is not None and not SECRET_VERSION_PATTERN.match(self.secret_version):
            raise PiiKeyError(
                f"--pii-key-secret must look like projects/P/secrets/S/versions/V, got {self.secret_version!r}"
            )

    def resolve(self) -> PiiKey:
        if self.secret_version is not None:
            return _from_secret_manager(self.client_factory(), self.secret_version)
        value = os.environ.get(KEY_ENV)
        if value:
            return PiiKey(value.encode(), os.environ.get(KEY_VERSION_ENV) or f"env:{fingerprint(value.encode())}")
        if not self.allow_dev_key:
            raise PiiKeyError(
                f"no PII key: {KEY_ENV} is not set and --pii-key-secret was not given; "
                "the development key is for local runners only"
            )
        _warn_dev_key()
        return PiiKey(DEV_KEY, DEV_KEY_VERSION)

    def resolve_once(self) -> PiiKey:
        """``resolve``, with a Secret Manager read cached per process (every
        DoFn instance of a worker shares one call; the environment is read each time)."""
        return _resolved(self) if self.secret_version is not None else self.resolve()


@functools.cache
def _warn_dev_key() -> None:
    # Once per process: a local runner may set a DoFn up for every bundle.
    logging.warning("%s is not set: hashing PII with the local development key", KEY_ENV)


@functools.lru_cache(maxsize=8)
def _resolved(source: PiiKeySource) -> PiiKey:
    return source.resolve()


def fingerprint(secret: bytes) -> str:
    return hashlib.sha256(b"funnel-lakehouse pii key fingerprint\0" + secret).hexdigest()[:12]


def _from_secret_manager(client, name: str) -> PiiKey:
    from google.api_core import exceptions
    from google.api_core.retry import Retry, if_exception_type

    # Transient errors are retried by the client's Retry; a missing secret or
    # a denied access is not, and fails the worker's setup with the name.
    retry = Retry(
        predicate=if_exception_type(
            exceptions.ServiceUnavailable,
            exceptions.DeadlineExceeded,
            exceptions.TooManyRequests,
            exceptions.InternalServerError,
        ),
        initial=1.0,
        maximum=30.0,
        timeout=300.0,
    )
    try:
        response = client.access_secret_version(request={"name": name}, retry=retry)
    except exceptions.GoogleAPICallError as error:
        raise PiiKeyError(f"cannot read the PII key {name}: {error.__class__.__name__}") from None
    secret = bytes(response.payload.data)
    if not secret:
        raise PiiKeyError(f"the PII key {name} is empty")
    # secrets/S/versions/N: the version that was read, even for ".../versions/latest".
    version = "/".join(response.name.split("/")[2:]) if response.name else name
    return PiiKey(secret, version)


def local_key() -> PiiKey:
    """The key a local tool (the benchmark's reference) uses: environment, else the development key."""
    return PiiKeySource().resolve()
