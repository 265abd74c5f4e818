"""The Dataflow flex-template metadata matches the pipelines' flags; infra/ parses and passes the policy scan."""
import json
from pathlib import Path

import hcl2
import pytest

from pipelines import backfill, gold_daily

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name, module, example", [
    ("backfill", backfill, {"input": "gs://landing/*.jsonl", "lake": "gs://lake/funnel",
                            "from": "2026-11-02", "to": "2026-11-03", "sink": "bigquery",
                            "pii_key_secret": "projects/p/secrets/pii/versions/3"}),
    ("gold_daily", gold_daily, {"lake": "gs://lake/funnel", "as_of": "2026-11-08", "sink": "bigquery"}),
])
def test_template_parameters_are_flags_of_the_pipeline(name, module, example, monkeypatch):
    metadata = json.loads((ROOT / "templates" / f"{name}.metadata.json").read_text())
    assert sorted(p["name"] for p in metadata["parameters"]) == sorted(example)
    # Dataflow passes each parameter as --name=value; the pipeline must accept all of them.
    seen = {}

    class Submitted:  # what the launcher gets back; no counters yet, so nothing to log or check
        def metrics(self):
            return type("Metrics", (), {"query": lambda self: {"counters": []}})()

    def submit(title, options, build):
        seen["title"] = title
        return Submitted()

    monkeypatch.setattr(module, "run_pipeline", submit)
    monkeypatch.setattr(module, "expand_inputs", lambda patterns, lake: ["gs://landing/a.jsonl"], raising=False)
    module.main([f"--{k}={v}" for k, v in example.items()] + ["--runner=DataflowRunner", "--project=p"])
    assert seen["title"] == name


def test_dockerfile_installs_the_locked_package_and_selects_the_pipeline():
    dockerfile = (ROOT / "templates" / "Dockerfile").read_text()
    assert "-c requirements-lock.txt" in dockerfile
    assert 'FLEX_TEMPLATE_PYTHON_PY_FILE="${WORKDIR}/pipelines/${PIPELINE}.py"' in dockerfile
    setup = (ROOT / "setup.py").read_text()
    beam_pin = next(line for line in setup.splitlines() if "apache-beam" in line)
    assert beam_pin.split("==")[1].split('"')[0] in dockerfile


def test_infra_parses_and_declares_the_layers():
    parsed = {}
    for path in sorted((ROOT / "infra").glob("*.tf")):
        with path.open() as f:
            for key, value in hcl2.load(f).items():
                parsed.setdefault(key, []).extend(value)
    # python-hcl2 keeps the quotes of block labels
    resources = {kind.strip('"'): name for block in parsed["resource"] for kind, name in block.items()}
    assert {"google_storage_bucket", "google_bigquery_dataset", "google_pubsub_topic",
            "google_pubsub_subscription", "google_service_account"} <= set(resources)
    locals_ = {k: v for block in parsed["locals"] for k, v in block.items()}
    # every dataset the pipelines write to (the scratch tables of a MERGE live in ops)
    from schemas.tables import ALL_TABLES, SILVER_STREAM
    written = {t.layer for t in [*ALL_TABLES.values(), *SILVER_STREAM.values()] if t.layer != "raw"}
    assert sorted(k.strip('"') for k in locals_["datasets"]) == sorted(written | {"ops"})


def test_infra_passes_the_checkov_policy_scan():
    from devtools import infra_check

    result = infra_check.scan()
    assert result["summary"]["passed"] > 20
    assert result["failed_checks"] == [], [(c["check_id"], c["resource"]) for c in result["failed_checks"]]
    # every skip in infra/ names its reason
    for path in (ROOT / "infra").glob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                assert len(line.split("checkov:skip=", 1)[1].split(":", 1)) == 2, line
