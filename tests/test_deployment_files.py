"""Deployment: the flex templates against the pipelines' own flags, the
launchers (make targets, Cloud Scheduler, Airflow) against the templates,
infra/ (python-hcl2, checkov, the BigQuery tables against schemas/), and the
generated LookML and dbt sources against the gold schema."""

import ast
import json
import re
from datetime import date
from pathlib import Path

import hcl2
import lkml
import pytest
import yaml

from devtools import deploy
from pipelines import backfill, common, gold_daily, stream_ingest
from schemas import dbt, generate, lookml, terraform
from schemas.tables import BIGQUERY_TABLES, DATASETS, GOLD

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = {"backfill": backfill, "gold_daily": gold_daily, "stream_ingest": stream_ingest}
# required of a launch on Dataflow although optional for a local run
REQUIRED_ON_DATAFLOW = {"pii_key_secret"}


def metadata(name: str) -> dict:
    return json.loads((ROOT / "templates" / f"{name}.metadata.json").read_text())


def parameters(name: str) -> dict[str, dict]:
    return {p["name"]: p for p in metadata(name)["parameters"]}


def flags(module) -> dict[str, object]:
    """Template parameter name -> argparse action, of every flag of the pipeline."""
    return {
        common.template_parameter(a.option_strings[0]): a
        for a in module.arg_parser()._actions
        if a.option_strings and a.dest != "help"
    }


def example(parameter: dict) -> str:
    return parameter["helpText"].rsplit("Example: ", 1)[1]


def assert_valid_launch(name: str, params: dict[str, str]) -> None:
    """What Dataflow checks at launch: known names, required ones present, values matching."""
    declared = parameters(name)
    assert set(params) <= set(declared), f"{name}: unknown parameters {set(params) - set(declared)}"
    required = {n for n, p in declared.items() if not p.get("isOptional")}
    assert required <= set(params), f"{name}: missing {required - set(params)}"
    for key, value in params.items():
        assert any(re.match(rx, value) for rx in declared[key]["regexes"]), (name, key, value)


# --- templates against the pipelines ---------------------------------------------------------
@pytest.mark.parametrize("name", list(PIPELINES))
def test_template_parameters_are_exactly_the_pipeline_flags(name):
    declared, own = parameters(name), flags(PIPELINES[name])
    offered = {n for n in own if n not in common.NOT_TEMPLATE_PARAMETERS}
    assert set(declared) == offered, (
        f"missing from the template: {offered - set(declared)}; unknown to the pipeline: {set(declared) - offered}"
    )
    for n, p in declared.items():
        assert p["label"] and p["helpText"] and p["regexes"], n
        required = own[n].required or n in REQUIRED_ON_DATAFLOW
        assert bool(p.get("isOptional")) is not required, f"{name}.{n}: isOptional disagrees with the flag"
        assert re.match(p["regexes"][0], example(p)), f"{name}.{n}: the help's example fails the regex"
        if own[n].choices:  # the regex admits exactly the flag's choices
            assert all(re.match(p["regexes"][0], c) for c in own[n].choices)
            assert not re.match(p["regexes"][0], "neither")


class Submitted:
    """What a launcher gets back from DataflowRunner: a job id, no waiting."""

    job_id = staticmethod(lambda: "2026-11-26_01_02_03-123")

    def wait_until_finish(self):
        raise AssertionError("the launcher waited for a Dataflow job")


class FakePipeline:
    """beam.Pipeline that records its options and is submitted, not run."""

    built = []

    def __init__(self, options=None):
        self.options = options
        FakePipeline.built.append(self)

    def run(self):
        return Submitted()


@pytest.mark.parametrize("name", list(PIPELINES))
def test_every_template_parameter_reaches_the_pipeline_and_the_launcher_returns(name, monkeypatch, capsys):
    module = PIPELINES[name]
    params = {n: example(p) for n, p in parameters(name).items()}
    params.pop("as_of_timestamp", None)  # not with as_of_version (one group)
    monkeypatch.setattr(common.beam, "Pipeline", FakePipeline)
    monkeypatch.setattr(stream_ingest.beam, "Pipeline", FakePipeline)
    seen = {}
    monkeypatch.setattr(module, "build", lambda *a, **k: seen.setdefault("build", (a, k)) and 0)
    monkeypatch.setattr(
        module,
        "expand_inputs",
        lambda patterns, lake: seen.setdefault("inputs", patterns) and ["gs://landing/a.jsonl"],
        raising=False,
    )
    monkeypatch.setattr(module, "_source_files", lambda paths: frozenset({"gs://landing/a.jsonl"}), raising=False)
    # gold refuses a lake with nothing to build from; this one is on GCS, which the test cannot reach
    monkeypatch.setattr(module, "open_table", lambda lake, table: object(), raising=False)
    # so are the funnel definitions the gold launcher reads and validates before it submits
    monkeypatch.setattr(module, "read_definitions", lambda path: seen.setdefault("funnels", path) and (), raising=False)
    FakePipeline.built.clear()
    # Dataflow passes each parameter as --name=value, names spelled with underscores
    module.main([f"--{k}={v}" for k, v in params.items()] + ["--runner=DataflowRunner", "--project=p"])
    assert "build" in seen and len(FakePipeline.built) == 1
    assert "submitted" in capsys.readouterr().out
    if name == "backfill":  # {yesterday} became a date at launch
        assert re.fullmatch(r"gs://my-landing/\d{4}-\d{2}-\d{2}/\*\.jsonl", seen["inputs"][0])
    if name == "gold_daily":
        assert seen["funnels"] == params["funnels"]


def test_remote_runs_return_once_submitted_unless_told_to_wait(monkeypatch):
    waited = []

    class Result:
        def wait_until_finish(self):
            waited.append(True)

        def metrics(self):
            return type("Metrics", (), {"query": lambda self: {"counters": []}})()

    monkeypatch.setattr(common.beam, "Pipeline", lambda options: type("P", (), {"run": lambda self: Result()})())

    def options(runner):
        return common.parse(common.pipeline_parser("x"), [f"--runner={runner}"])[1]

    assert common.run_pipeline("t", options("DataflowRunner"), lambda p: None)[1] is False
    assert waited == []
    assert common.run_pipeline("t", options("DataflowRunner"), lambda p: None, wait=True)[1] is True
    assert common.run_pipeline("t", options("FnApiRunner"), lambda p: None)[1] is True
    assert len(waited) == 2


def test_underscore_spellings_reach_hyphenated_flags_and_beam_keeps_its_own():
    args, options = common.parse(
        gold_daily.arg_parser(), ["--lake=/l", "--as_of=2026-11-08", "--as_of_version=3", "--temp_location=gs://t/tmp"]
    )
    assert args.as_of == date(2026, 11, 8) and args.as_of_version == 3
    assert options.get_all_options()["temp_location"] == "gs://t/tmp"


def test_a_pipeline_image_names_itself_as_the_workers_container(monkeypatch):
    monkeypatch.setenv(common.SDK_CONTAINER_IMAGE_ENV, "r-docker.pkg.dev/p/funnel/backfill:abc")
    _, options = common.parse(gold_daily.arg_parser(), ["--lake=/l"])
    assert options.get_all_options()["sdk_container_image"] == "r-docker.pkg.dev/p/funnel/backfill:abc"
    assert options.get_all_options()["sdk_location"] == "container"
    _, options = common.parse(gold_daily.arg_parser(), ["--lake=/l", "--sdk_container_image=other:1"])
    assert options.get_all_options()["sdk_container_image"] == "other:1"


def test_dated_input_patterns():
    assert backfill.dated_pattern("gs://b/{yesterday}/*.jsonl", date(2026, 3, 1)) == "gs://b/2026-02-28/*.jsonl"
    assert backfill.dated_pattern("gs://b/{today}/x", date(2026, 3, 1)) == "gs://b/2026-03-01/x"


def test_dockerfile_builds_every_pipeline_from_the_locked_package():
    dockerfile = (ROOT / "templates" / "Dockerfile").read_text()
    assert "-c requirements-lock.txt" in dockerfile
    assert 'FLEX_TEMPLATE_PYTHON_PY_FILE="${WORKDIR}/pipelines/${PIPELINE}.py"' in dockerfile
    assert f'{common.SDK_CONTAINER_IMAGE_ENV}="${{IMAGE}}"' in dockerfile
    beam_pin = next(line for line in (ROOT / "setup.py").read_text().splitlines() if "apache-beam" in line)
    assert beam_pin.split("==")[1].split('"')[0] in dockerfile
    build = yaml.safe_load((ROOT / "templates" / "cloudbuild.yaml").read_text())
    built = {step["id"]: step["args"] for step in build["steps"]}
    assert set(built) == set(PIPELINES)
    for name, args in built.items():
        assert f"PIPELINE={name}" in args and "templates/Dockerfile" in args
        assert f"${{_IMAGE_ROOT}}/{name}:${{_TAG}}" in args and f"IMAGE=${{_IMAGE_ROOT}}/{name}:${{_TAG}}" in args
    assert sorted(build["images"]) == sorted(f"${{_IMAGE_ROOT}}/{n}:${{_TAG}}" for n in PIPELINES)


# --- make template-build / template-run-PIPELINE -----------------------------------------------
def test_build_commands_build_the_images_then_one_template_per_pipeline():
    d = deploy.Deployment("my-project", "europe-west4", tag="abc123")
    commands = deploy.build_commands(d)
    assert commands[0][:3] == ["gcloud", "builds", "submit"]
    assert "_IMAGE_ROOT=europe-west4-docker.pkg.dev/my-project/funnel,_TAG=abc123" in commands[0]
    for name, command in zip(PIPELINES, commands[1:]):
        assert command[:5] == [
            "gcloud",
            "dataflow",
            "flex-template",
            "build",
            f"gs://my-project-funnel-dataflow/templates/{name}.json",
        ]
        option = dict(zip(command[5::2], command[6::2]))
        assert option["--image"] == f"europe-west4-docker.pkg.dev/my-project/funnel/{name}:abc123"
        assert (ROOT / option["--metadata-file"]).exists() and option["--sdk-language"] == "PYTHON"


@pytest.mark.parametrize("name", list(PIPELINES))
def test_run_commands_launch_valid_parameters(name):
    d = deploy.Deployment("my-project")
    command = deploy.run_command(d, name, {"sink": "lake"})
    assert command[:4] == ["gcloud", "dataflow", "flex-template", "run"]
    params = dict(command[i + 1].split("=", 1) for i, arg in enumerate(command) if arg == "--parameters")
    assert params["sink"] == "lake"
    assert_valid_launch(name, params)
    assert d.template(name) in command and d.service_account in command
    assert ("--enable-streaming-engine" in command) is (name == "stream_ingest")


def test_terraform_outputs_name_what_the_launches_use(infra):
    declared = {unquote(k) for block in infra["parsed"]["output"] for k in block}
    assert set(deploy.OUTPUTS) <= declared
    outputs = {
        "lake": "gs://custom-lake/funnel",
        "template_root": "gs://custom-df/tpl",
        "service_account": "sa@x.iam.gserviceaccount.com",
        "pii_key_secret": "projects/x/secrets/k/versions/2",
    }
    command = deploy.run_command(deploy.Deployment("p", outputs=outputs), "backfill")
    assert {
        "gs://custom-df/tpl/backfill.json",
        "sa@x.iam.gserviceaccount.com",
        "lake=gs://custom-lake/funnel",
        "pii_key_secret=projects/x/secrets/k/versions/2",
    } <= set(command)


def test_without_a_project_the_commands_are_printed(monkeypatch, capsys):
    monkeypatch.setattr(deploy, "configured_project", lambda: None)
    monkeypatch.setattr(deploy.subprocess, "run", lambda *a, **k: pytest.fail("ran a command"))
    assert deploy.main(["run", "gold_daily", "--param", "as_of=2026-11-25", "--tag", "t"]) == 0
    out = capsys.readouterr().out
    assert "No Google Cloud project configured" in out
    assert "gcloud dataflow flex-template run funnel-gold-daily-" in out and "--parameters as_of=2026-11-25" in out
    assert deploy.main(["build", "--tag", "t"]) == 0
    assert capsys.readouterr().out.count("gcloud dataflow flex-template build") == 3


# --- infra/ ---------------------------------------------------------------------------------
def load_infra() -> dict[str, list]:
    parsed = {}
    paths = sorted((ROOT / "infra").glob("*.tf")) + sorted((ROOT / "infra").glob("*.tf.json"))
    assert paths
    for path in paths:
        with path.open() as f:
            document = json.load(f) if path.name.endswith(".json") else hcl2.load(f)
        for key, value in document.items():
            parsed.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    return parsed


def unquote(value):
    """python-hcl2 keeps HCL's quotes and escapes; the value as Python."""
    if isinstance(value, str) and value.startswith('"') and value.endswith('"'):
        return json.loads(value.replace("$${", "${").replace("%%{", "%{"))
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items() if k != "__is_block__"}
    return value


@pytest.fixture(scope="module")
def infra():
    parsed = load_infra()
    resources = {}
    for block in parsed["resource"]:
        for kind, named in block.items():
            for name, body in named.items():
                resources.setdefault(unquote(kind), {})[unquote(name)] = body
    locals_ = {unquote(k): v for block in parsed["locals"] for k, v in block.items() if k != "__is_block__"}
    return {"resources": resources, "locals": locals_, "parsed": parsed}


def test_infra_declares_the_whole_stack(infra):
    r = infra["resources"]
    assert {"lake", "landing", "dataflow", "access_logs"} <= set(r["google_storage_bucket"])
    for bucket in ("lake", "landing", "dataflow"):
        body = r["google_storage_bucket"][bucket]
        assert body["versioning"][0]["enabled"] is True and body["lifecycle_rule"], bucket
    assert {"raw_events", "raw_events_undeliverable", "alerts"} <= set(r["google_pubsub_topic"])
    subscription = r["google_pubsub_subscription"]["stream_ingest"]
    assert "raw_events_undeliverable" in subscription["dead_letter_policy"][0]["dead_letter_topic"]
    assert subscription["retry_policy"][0]["minimum_backoff"]
    assert "google_artifact_registry_repository" in r and "google_secret_manager_secret" in r
    # the PII key is readable by the worker account and nobody else
    secret_iam = r["google_secret_manager_secret_iam_member"]
    assert [unquote(b["role"]) for b in secret_iam.values()] == ["roles/secretmanager.secretAccessor"]
    assert [b["member"] for b in secret_iam.values()] == ["${local.dataflow_member}"]
    assert "google_dataflow_job" not in r  # jobs are launched from templates, not declared
    # no project-wide data roles for the workers: data access is per dataset, bucket, topic, secret
    project_roles = {unquote(b["role"]) for b in r["google_project_iam_member"].values()}
    assert project_roles == {"roles/dataflow.worker", "roles/bigquery.jobUser", "roles/dataflow.developer"}
    policies = r["google_monitoring_alert_policy"]
    assert set(policies) == {"dead_letter_volume", "stream_freshness", "data_quality_blocking"}
    # the blocking checks' counter, as the pipelines name it (transforms.batch.quality)
    (condition,) = policies["data_quality_blocking"]["conditions"]
    assert 'metric_name=\\"dq_checks_blocking\\"' in condition["condition_prometheus_query_language"][0]["query"]
    outputs = {unquote(k) for block in infra["parsed"]["output"] for k in block}
    assert {
        "lake",
        "template_root",
        "image_root",
        "subscription",
        "alerts_topic",
        "pii_key_secret",
        "service_account",
        "temp_location",
    } <= outputs


def test_bigquery_tables_in_terraform_equal_the_schemas(infra):
    from transforms.sinks.bigquery import bigquery_table

    declared = unquote(infra["locals"]["bigquery_tables"])
    assert declared == terraform.definitions()
    assert set(declared) == {f"{t.layer}.{t.name}" for t in BIGQUERY_TABLES}
    # ... and equal what an --sink bigquery run creates
    for table in BIGQUERY_TABLES:
        api = bigquery_table("p", table).to_api_repr()
        mine = declared[f"{table.layer}.{table.name}"]
        assert mine["schema"] == api["schema"]["fields"], table.name
        assert mine["partition_field"] == api.get("timePartitioning", {}).get("field"), table.name
        assert mine["clustering"] == api.get("clustering", {}).get("fields", []), table.name
        assert mine["description"] == api["description"]
    datasets = unquote(infra["locals"]["datasets"])
    assert datasets == DATASETS
    assert {d["dataset"] for d in declared.values()} <= set(datasets)


def test_scheduled_launches_are_valid_template_launches(infra):
    launches = unquote(infra["locals"]["daily_launches"])
    assert set(launches) == {"backfill", "gold_daily"}
    for name, launch in launches.items():
        params = {
            k: v.replace("${local.landing_bucket}", "landing")
            .replace("${var.landing_daily_glob}", "{yesterday}/*.jsonl")
            .replace("${local.lake}", "gs://lake")
            .replace("${local.pii_key_version}", "projects/p/secrets/s/versions/latest")
            for k, v in launch["parameters"].items()
        }
        assert_valid_launch(name, params)
        assert set(params) == set(deploy.Deployment("p").default_parameters(name)), name
    scheduler = infra["resources"]["google_cloud_scheduler_job"]["daily"]
    assert "flexTemplates:launch" in unquote(infra["locals"]["flex_template_launch_uri"])
    assert scheduler["http_target"][0]["uri"] == "${local.flex_template_launch_uri}"


def test_names_in_infra_are_the_ones_the_make_targets_use(infra):
    d = deploy.Deployment("proj-1", "europe-west4", "funnel")

    def resolve(expression: str) -> str:
        value = unquote(expression)
        for var, v in (("${var.project}", d.project), ("${var.region}", d.region), ("${var.name_prefix}", d.prefix)):
            value = value.replace(var, v)
        return value

    locals_ = infra["locals"]
    assert resolve(locals_["lake_bucket"]) == f'${{coalesce(var.lake_bucket, "{d.lake[5:]}")}}'
    assert resolve(locals_["landing_bucket"]).endswith(f'"{d.landing_bucket}")}}')
    assert resolve(locals_["dataflow_bucket"]).endswith(f'"{d.dataflow_bucket}")}}')
    assert resolve(locals_["image_root"]) == d.image_root
    assert resolve(locals_["stream_job_name"]) == d.stream_job_name
    assert resolve(locals_["template_root"]) == "gs://${local.dataflow_bucket}/templates"
    r = infra["resources"]
    assert (
        f"projects/{d.project}/subscriptions/" + resolve(r["google_pubsub_subscription"]["stream_ingest"]["name"])
        == d.subscription
    )
    assert f"projects/{d.project}/topics/" + resolve(r["google_pubsub_topic"]["alerts"]["name"]) == d.alerts_topic
    assert (
        f"{resolve(r['google_service_account']['dataflow']['account_id'])}@{d.project}.iam.gserviceaccount.com"
        == d.service_account
    )
    assert (
        d.pii_key_secret
        == f"projects/{d.project}/secrets/"
        + resolve(r["google_secret_manager_secret"]["pii_key"]["secret_id"])
        + "/versions/latest"
    )


def test_infra_passes_the_checkov_policy_scan():
    from devtools import infra_check

    result = infra_check.scan()
    assert result["summary"]["passed"] > 50
    assert result["failed_checks"] == [], [(c["check_id"], c["resource"]) for c in result["failed_checks"]]
    # every skip in infra/ names its reason
    for path in (ROOT / "infra").glob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                assert len(line.split("checkov:skip=", 1)[1].split(":", 1)[1]) > 20, line


# --- generated files ---------------------------------------------------------------------------
def test_generated_files_are_up_to_date():
    assert generate.drifted() == [], "run `make generate`"


def test_generated_files_drift_is_detected(tmp_path):
    for path, text in generate.generated().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    assert generate.drifted(tmp_path) == []
    (tmp_path / dbt.PATH).write_text((tmp_path / dbt.PATH).read_text().replace("user_id", "userid", 1))
    (tmp_path / lookml.ROOT / "views" / "old_mart.view.lkml").write_text("view: old_mart {}\n")
    assert generate.drifted(tmp_path) == [dbt.PATH, f"{lookml.ROOT}/views/old_mart.view.lkml"]


TABLE_COLUMN = re.compile(r"\$\{TABLE\}\.(\w+)")


def test_lookml_parses_and_every_field_names_a_column_of_its_table():
    views = {}
    for path in sorted((ROOT / lookml.ROOT / "views").glob("*.view.lkml")):
        for view in lkml.load(path.read_text())["views"]:
            views[view["name"]] = view
    tables = {t.name: t for t in lookml.LOOKML_TABLES}
    assert set(views) == set(GOLD) | {"dq_results", "dq_completeness", "metric_revisions"} == set(tables)
    for name, view in views.items():
        table = tables[name]
        assert view["sql_table_name"] == f"{table.layer}.{name}"
        columns = set(table.column_names)
        fields = view.get("dimensions", []) + view.get("dimension_groups", []) + view["measures"]
        named = set()
        for field in fields:
            used = set(TABLE_COLUMN.findall(field["sql"]))
            assert used and used <= columns, (name, field["name"], used - columns)
            assert field.get("description"), (name, field["name"])
            named |= used
        assert named >= columns, f"{name}: no field for {columns - named}"
        # the contract's unique counts
        measures = {m["name"]: m for m in view["measures"]}
        if "user_id" in columns:
            assert (measures["unique_users"]["type"], measures["unique_users"]["sql"]) == (
                "count_distinct",
                "${TABLE}.user_id",
            )
        if "session_id" in columns:
            assert measures["unique_sessions"]["type"] == "count_distinct"
    funnel = {m["name"]: m["sql"] for m in views["fact_funnel_stage"]["measures"]}
    assert funnel["conversion_rate"] == (
        "SAFE_DIVIDE(COUNT(DISTINCT IF(${TABLE}.stage_name = 'payment_successful', "
        "${TABLE}.session_id, NULL)), COUNT(DISTINCT IF(${TABLE}.stage_name = "
        "'browse', ${TABLE}.session_id, NULL)))"
    )
    mart = {m["name"]: m["sql"] for m in views["mart_conversion_rate"]["measures"]}
    assert (
        mart["overall_conversion_rate"] == "SAFE_DIVIDE(SUM(${TABLE}.sessions_payment), SUM(${TABLE}.sessions_browse))"
    )

    model = lkml.load((ROOT / lookml.ROOT / f"{lookml.MODEL}.model.lkml").read_text())
    explores = {e["name"]: e for e in model["explores"]}
    assert {
        "funnel_conversion",
        "funnel_sessions",
        "barcode_activity",
        "retargeting",
        "ab_tests",
        "operational_alerts",
        "data_quality",
        "data_completeness",
        "metric_revisions",
    } <= set(explores)
    for explore in explores.values():
        base = explore.get("view_name", explore["name"])
        assert base in views
        for join in explore.get("joins", []):
            assert join["name"] in views
            for view_name, field in re.findall(r"\$\{(\w+)\.(\w+)\}", join["sql_on"]):
                assert field in tables[view_name].column_names, join["sql_on"]


def test_dbt_sources_name_every_bigquery_table_and_column():
    sources = yaml.safe_load((ROOT / dbt.PATH).read_text())
    declared = {(s["schema"], t["name"]): t for s in sources["sources"] for t in s["tables"]}
    assert set(declared) == {(t.layer, t.name) for t in BIGQUERY_TABLES}
    for table in BIGQUERY_TABLES:
        columns = declared[(table.layer, table.name)]["columns"]
        assert [(c["name"], c["data_type"]) for c in columns] == [(c.name, c.bigquery_type) for c in table.columns]
        for column, c in zip(columns, table.columns):
            assert ("not_null" in column.get("data_tests", [])) is c.required
    assert declared[("gold", "dim_user")]["columns"][0]["data_tests"] == ["not_null", "unique"]
    assert all(
        "unique" not in c.get("data_tests", [])
        for (layer, _), t in declared.items()
        if layer == "bronze"
        for c in t["columns"]
    )


# --- the Airflow DAG ---------------------------------------------------------------------------
def test_airflow_dag_imports_without_airflow_and_launches_valid_templates():
    """Airflow with the Google and Beam providers takes ~3 minutes to install, so
    this is a parse check: the module imports without Airflow, its launch
    bodies are valid launches of the templates with infra/'s names, and the
    DAG chains backfill before gold waiting for each job."""
    from orchestration import funnel_daily_dag as dag_module

    d = deploy.Deployment("proj-1", prefix="funnel")
    for name in dag_module.PIPELINES:
        body = dag_module.launch_body(name, project="proj-1", region="europe-west1", prefix="funnel", day="2026-11-25")[
            "launchParameter"
        ]
        assert_valid_launch(name, body["parameters"])
        assert body["containerSpecGcsPath"] == d.template(name)
        assert body["environment"]["serviceAccountEmail"] == d.service_account
        assert body["environment"]["tempLocation"] == d.temp_location
        assert body["parameters"]["lake"] == d.lake
    backfill_body = dag_module.launch_body("backfill", day="2026-11-25", project="proj-1", prefix="funnel")
    assert backfill_body["launchParameter"]["parameters"]["input"] == "gs://proj-1-funnel-landing/2026-11-25/*.jsonl"
    source = (ROOT / "orchestration" / "funnel_daily_dag.py").read_text()
    tree = ast.parse(source)
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "DataflowStartFlexTemplateOperator"
    ]
    assert calls and {k.arg: getattr(k.value, "value", None) for k in calls[0].keywords}["wait_until_finished"] is True
    assert "launches[0] >> launches[1]" in source and dag_module.PIPELINES == ("backfill", "gold_daily")
