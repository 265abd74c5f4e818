# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
FUNNEL := $(VENV)/bin/funnel
STAMP  := $(VENV)/.installed-stamp

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_USERS ?= 20000
DEMO_DAYS  ?= 7
DEMO_DATA  ?= demo-data/landing
LAKE       ?= lake

.PHONY: install tool-venvs browser demo demo-bq test lint bench bench-daily bench-stream bench-stream-cpu stream-demo pubsub-up pubsub-down bq-up bq-down s3-up s3-down maintain infra-check generate template-build lock clean

install: $(STAMP)

# requirements-lock.txt pins every transitive version (constraints), so a
# fresh clone installs exactly what was tested.
$(STAMP): setup.py requirements-dev.txt requirements-lock.txt
	@echo "==> creating $(VENV) and installing (first time: about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c requirements-lock.txt -e . -r requirements-dev.txt
	@touch $(STAMP)

demo: install
	@echo "==> [1/5] generating $(DEMO_USERS) users over $(DEMO_DAYS) days into $(DEMO_DATA)"
	$(FUNNEL) generate --users $(DEMO_USERS) --days $(DEMO_DAYS) --seed 42 --out $(DEMO_DATA) --force
	@echo "==> [2/5] backfill: raw -> bronze -> silver (lake: $(LAKE))"
	$(FUNNEL) backfill --input '$(DEMO_DATA)/*.jsonl' --lake $(LAKE)
	@echo "==> [3/5] gold: facts and marts, truncate and load"
	$(FUNNEL) gold --lake $(LAKE)
	@echo "==> [4/5] funnel report, A/B readout, alerts"
	$(FUNNEL) report --lake $(LAKE)
	@echo "==> [5/5] retargeting audience as a Customer Match file"
	$(FUNNEL) export-audience --lake $(LAKE) --out $(LAKE)/reports/audience.csv
	@echo ""
	@echo "lake:  $(abspath $(LAKE))   (raw/ bronze/ silver/ gold/ dead_letter/)"
	@echo "chart: $(abspath $(LAKE))/reports/funnel.png"
	@echo "page:  $(abspath $(LAKE))/reports/funnel.html   (the funnel explorer: open it in a browser, works offline)"

# The demo, then its backfill and gold again into the local BigQuery
# emulator, and the funnel read back with SQL.
demo-bq: demo
	@echo "==> backfill + gold with --sink bigquery (local BigQuery emulator), read back with SQL"
	$(PY) -m devtools.bigquery_demo --input '$(DEMO_DATA)/*.jsonl' --lake $(LAKE)

# The emulators and the S3 server are started for the run (unless running) and
# stopped after; pytest runs in TEST_WORKERS processes (pytest-xdist), a test
# file's tests in one of them, so `make test` needs no other step. Three on two
# cores: the streaming tests mostly wait (for timers, the emulator, a grace).
TEST_WORKERS ?= 3
test: browser
	@$(MAKE) --no-print-directory -j3 install tool-venvs
	@$(MAKE) --no-print-directory lint
	$(PY) -m devtools.with_services $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

# ruff (lint and format, pyproject.toml) and import-linter (the layers, pyproject.toml)
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# The emulators' and checkov's own virtualenvs (their pins clash with Beam's),
# created together; the tests would otherwise create each on first use.
tool-venvs:
	$(PYTHON) -m devtools.tool_venv

# Debian's Chromium for the explorer's browser test (tests/test_explorer.py);
# playwright drives it, so no browser is downloaded from elsewhere.
browser:
	@command -v chromium >/dev/null || { echo "==> installing Debian's chromium (apt)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# Throughput and memory of backfill + gold at 250k, 1M and 4M raw records, this
# code and the previous release side by side, then the daily run (bench-daily)
# (BENCHMARKS.md); SIZES=250000,1000000 for a shorter run, BASELINE=none to skip
# the previous releases.
SIZES ?= 250000,1000000,4000000
BASELINE ?= 9f29f42
bench: install
	$(PY) -m benchmarks.run --sizes $(SIZES) --baseline $(BASELINE)
	$(PY) -m benchmarks.daily --baseline $(if $(filter none,$(BASELINE)),none,$(DAILY_BASELINE))

# One day's landing file backfilled (then gold) into an empty lake and lakes of
# 28 and 56 days, this code and the last release that recomputed silver
# (DAILY_BASELINE=none to skip it).
DAILY_BASELINE ?= 5c58303
bench-daily: install
	$(PY) -m benchmarks.daily --baseline $(DAILY_BASELINE)

# publish -> silver latency and backlog drain rate of stream_ingest on the
# Pub/Sub emulator (started and stopped here unless one is running), this code
# and the previous release
bench-stream: install
	$(PY) -m benchmarks.stream --baseline $(BASELINE)

# CPU per record of the streaming transforms on FnApiRunner over bounded
# input, this code and the previous release; ends with
# "streaming transforms: N CPU-s per million records"
bench-stream-cpu: install
	$(PY) -m benchmarks.stream_cpu --baseline $(BASELINE)

stream-demo: install
	rm -rf lake-stream
	$(PY) -m devtools.stream_demo --lake lake-stream

pubsub-up: install
	$(PY) -m devtools.pubsub_emulator start

pubsub-down: install
	$(PY) -m devtools.pubsub_emulator stop

# The local BigQuery emulator (bqemulator, in its own .venv-bqemulator) on
# 127.0.0.1:9050; the tests start and stop it themselves when none runs.
bq-up: install
	$(PY) -m devtools.bigquery_emulator start

bq-down: install
	$(PY) -m devtools.bigquery_emulator stop

# Policy scan of infra/ (checkov, offline, from its own .venv-checkov); also part of make test.
# A local S3 server (moto, in its own .venv-s3) on 127.0.0.1:9070, for a lake
# on an object store; the tests start and stop it themselves.
s3-up: install
	$(PY) -m devtools.s3_emulator start

s3-down: install
	$(PY) -m devtools.s3_emulator stop

# Compaction, log checkpoints and vacuum of every lake table (LAKE=...).
maintain: install
	$(FUNNEL) maintain --lake $(LAKE)

infra-check: install
	$(PY) -m devtools.infra_check

# Regenerate what derives from schemas/: infra/bigquery_tables.tf, the LookML
# project in looker/, dbt's sources in dbt/ (the tests fail when they drift).
generate: install
	$(PY) -m schemas.generate

# Google Cloud (README "Deploy"): the three images and template specs, and
# one launch. PROJECT (else gcloud's configured project), REGION, NAME_PREFIX;
# PARAMS="as_of=2026-11-25 sink=lake" overrides launch parameters. With no
# project configured the gcloud commands are printed, not run.
REGION ?= europe-west1
export PROJECT REGION NAME_PREFIX
template-build: install
	$(PY) -m devtools.deploy build

template-run-%: install
	$(PY) -m devtools.deploy run $* $(foreach p,$(PARAMS),--param '$(p)')

# Refresh the lock after changing a pin in setup.py or requirements-dev.txt.
lock:
	rm -rf /tmp/funnel-lock-venv && $(PYTHON) -m venv /tmp/funnel-lock-venv
	/tmp/funnel-lock-venv/bin/pip install --quiet -e . -r requirements-dev.txt
	/tmp/funnel-lock-venv/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements-lock.txt

clean:
	rm -rf $(VENV) .venv-bqemulator .venv-checkov .venv-s3 $(LAKE) lake-stream demo-data .pytest_cache .emulators
