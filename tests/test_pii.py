"""The PII key: read on the workers from Secret Manager (an injected fake
client here) or the environment, never in the job graph or the logs; the
development key refused on non-local runners; pii_key_version on the rows."""

import logging

import apache_beam as beam
import orjson
import pytest
from apache_beam.testing.util import assert_that, equal_to
from google.api_core import exceptions

from pipelines import backfill, stream_ingest
from schemas.tables import RAW
from tests.conftest import local_pipeline, ts
from transforms.batch.parse import ParseChunkFn
from transforms.rules.bronze import pseudonym
from transforms.rules.pii import DEV_KEY, KEY_ENV, KEY_VERSION_ENV, PiiKey, PiiKeyError, PiiKeySource, fingerprint

SECRET = b"s3cr3t-from-secret-manager"
SECRET_NAME = "projects/funnel-test/secrets/pii/versions/latest"
INGESTED = ts("2026-11-20T08:00:00Z")
NOW = ts("2026-11-25T00:00:00Z")


class _Payload:
    def __init__(self, data):
        self.data = data


class _Response:
    def __init__(self, name, data):
        self.name, self.payload = name, _Payload(data)


class FakeSecretManager:
    """The slice of SecretManagerServiceClient the key source calls; fails
    with ``failures`` first (the client's Retry handles them)."""

    def __init__(self, failures=()):
        self.failures, self.calls = list(failures), []

    def access_secret_version(self, request, retry=None):
        def call():
            self.calls.append(request["name"])
            if self.failures:
                raise self.failures.pop(0)
            return _Response("projects/123456/secrets/pii/versions/7", SECRET)

        return retry(call)() if retry is not None else call()


def fake_client():
    return FakeSecretManager()


def test_the_key_comes_from_the_secret_manager_version_that_was_read():
    client = FakeSecretManager()
    key = PiiKeySource(SECRET_NAME, client_factory=lambda: client).resolve()
    assert key == PiiKey(SECRET, "secrets/pii/versions/7")  # "latest" resolved to the version read
    assert client.calls == [SECRET_NAME]
    assert SECRET.decode() not in repr(key) and SECRET.decode() not in str(key)


def test_a_transient_secret_manager_error_is_retried_and_a_permanent_one_is_not():
    client = FakeSecretManager([exceptions.ServiceUnavailable("down")])
    assert PiiKeySource(SECRET_NAME, client_factory=lambda: client).resolve().secret == SECRET
    assert len(client.calls) == 2
    denied = FakeSecretManager([exceptions.PermissionDenied("no accessor role")])
    with pytest.raises(PiiKeyError, match="cannot read the PII key .*PermissionDenied"):
        PiiKeySource(SECRET_NAME, client_factory=lambda: denied).resolve()
    assert len(denied.calls) == 1


def test_an_environment_key_has_a_fingerprint_version_and_the_dev_key_is_refused_where_not_allowed(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "env-key")
    monkeypatch.delenv(KEY_VERSION_ENV, raising=False)
    assert PiiKeySource(allow_dev_key=False).resolve() == PiiKey(b"env-key", f"env:{fingerprint(b'env-key')}")
    monkeypatch.setenv(KEY_VERSION_ENV, "2026-q4")
    assert PiiKeySource().resolve().version == "2026-q4"
    monkeypatch.delenv(KEY_ENV)
    assert PiiKeySource().resolve() == PiiKey(DEV_KEY, "dev")
    with pytest.raises(PiiKeyError, match="development key is for local runners only"):
        PiiKeySource(allow_dev_key=False).resolve()
    with pytest.raises(PiiKeyError, match="projects/P/secrets/S/versions/V"):
        PiiKeySource("pii-key")


@pytest.mark.parametrize(
    "module, flags",
    [
        (backfill, ["--input=gs://landing/*.jsonl", "--lake=gs://lake/funnel"]),
        (stream_ingest, ["--subscription=projects/p/subscriptions/s", "--lake=gs://lake/funnel"]),
    ],
)
def test_a_non_local_runner_refuses_the_development_key(module, flags, monkeypatch, capsys):
    """Option parsing only: no job is built or submitted."""
    monkeypatch.setenv(KEY_ENV, "a-launcher-env-key-does-not-reach-dataflow-workers")
    with pytest.raises(SystemExit) as exited:
        module.main(flags + ["--runner=DataflowRunner", "--project=funnel-test"])
    assert exited.value.code == 2
    assert "--runner=DataflowRunner needs --pii-key-secret" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module.main(flags + ["--runner=DataflowRunner", "--project=funnel-test", "--pii-key-secret=pii-key"])
    assert "must look like projects/P/secrets/S/versions/V" in capsys.readouterr().err


def _raw_chunk():
    user = {
        "record_type": "user",
        "schema_version": 1,
        "source": "accounts-api",
        "platform": "web",
        "emitted_at": "2026-11-02T09:00:00Z",
        "payload": {"user_id": "u-1", "email": " Ana@Example.com", "signup_date": "2025-03-14"},
    }
    row = {
        "ingest_date": "2026-11-20",
        "message_id": None,
        "publish_time": None,
        "attributes_json": None,
        "ingested_at": INGESTED,
        "source_file": "landing/a.jsonl",
        "source_line": 1,
        "data": orjson.dumps(user),
    }
    return RAW.to_arrow([row], with_partition_columns=True)


def test_workers_read_the_key_in_setup_and_the_graph_never_holds_it(monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, "env-key-that-must-not-be-used")
    source = PiiKeySource(SECRET_NAME, allow_dev_key=False, client_factory=fake_client)
    p = local_pipeline()
    users = (
        p
        | beam.Create([_raw_chunk()], reshuffle=False)
        | beam.ParDo(ParseChunkFn(source, "backfill", NOW)).with_outputs("dead_letter", main="bronze")
    ).bronze
    assert_that(
        users | beam.FlatMap(lambda kv: [(r["email_hash"], r["pii_key_version"]) for r in kv[1].to_pylist()]),
        equal_to([(pseudonym(SECRET, "ana@example.com"), "secrets/pii/versions/7")]),
    )
    graph = p.to_runner_api().SerializeToString()
    assert SECRET not in graph and b"env-key-that-must-not-be-used" not in graph
    with caplog.at_level(logging.DEBUG):
        p.run().wait_until_finish()
    assert SECRET.decode() not in caplog.text


def test_the_backfill_graph_holds_no_environment_key(monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, "launcher-env-key-sentinel")
    p = beam.Pipeline(options=local_pipeline().options)
    landing = tmp_path / "a.jsonl"
    landing.write_text("{}\n")
    backfill.build(p, [str(landing)], frozenset([str(landing)]), str(tmp_path / "lake"), None, PiiKeySource(), NOW)
    assert b"launcher-env-key-sentinel" not in p.to_runner_api().SerializeToString()
