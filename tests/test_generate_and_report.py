"""The generator is deterministic and as messy as the contract; the report draws the funnel."""

import hashlib
import re
import struct

import orjson

from pipelines import backfill, gold_daily, report
from simulator import traffic
from tests.conftest import SAMPLE


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    cfg = traffic.Config(users=200, days=2, seed=3)
    traffic.generate(cfg, str(tmp_path / "a"))
    traffic.generate(cfg, str(tmp_path / "b"))
    traffic.generate(traffic.Config(users=200, days=2, seed=4), str(tmp_path / "c"))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_generated_data_has_the_contracts_messiness(tmp_path):
    manifest = traffic.generate(traffic.Config(users=400, days=3, seed=5), str(tmp_path))
    records, lines = [], 0
    late = 0
    for path in sorted(tmp_path.glob("*.jsonl")):
        arrival_day = re.search(r"\d{4}-\d{2}-\d{2}", path.name).group()
        for line in path.read_bytes().splitlines():
            lines += 1
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record.get("payload"), dict):
                records.append(record)
                t = record["payload"].get("view_timestamp")
                if isinstance(t, str) and t[:10] < arrival_day:
                    late += 1
    assert lines == manifest["records_total"]
    view_times = [r["payload"].get("view_timestamp") for r in records if r["record_type"] == "view"]
    assert any(isinstance(t, int) for t in view_times)  # epoch millis
    assert any(isinstance(t, str) and t.endswith("Z") for t in view_times)
    assert any(isinstance(t, str) and re.search(r"[+-]\d\d:\d\d$", t) for t in view_times)
    assert any(isinstance(t, str) and re.search(r"\d\.\d{3}$", t) for t in view_times)  # no offset
    platforms = [r.get("platform") for r in records]
    assert set(platforms) >= {"iPhone", "Desktop", "Android", "POS", None}
    event_types = {r["payload"]["event_type"] for r in records if r["record_type"] == "event"}
    assert {"Article added to cart", "ADD_TO_CART", "add-to-cart", "payment_success"} <= event_types
    assert any(r["schema_version"] == 2 for r in records)
    assert late > 0 and manifest["counters"]["late_records"] > 0
    assert manifest["sessions_anonymous"] > 0 and manifest["sessions_without_record"] > 0
    assert manifest["counters"]["emails_resent"] > 0 and manifest["counters"]["payments_without_cart"] > 0
    assert manifest["counters"]["duplicate_redeliveries"] > 0 and manifest["counters"]["duplicate_retries"] > 0
    assert set(manifest["invalid_by_reason"]) == set(traffic.INVALID_REASONS) | {"oversized"}


def test_report_prints_the_funnel_and_draws_it(tmp_path, capsys):
    lake = tmp_path / "lake"
    backfill.main(["--input", str(SAMPLE), "--lake", str(lake)])
    gold_daily.main(["--lake", str(lake)])
    capsys.readouterr()
    summary = report.main(["--lake", str(lake)])
    text = capsys.readouterr().out
    assert summary["stages"] == [2, 1, 1, 1, 1]
    assert re.search(r"1 browse\s+2\s+100\.0%", text)
    assert re.search(r"2 add_to_cart\s+1\s+50\.0%\s+50\.0%", text)
    assert re.search(r"ios\s+1\s+0\s+0\s+0\.0%", text)
    # the use cases: the sample's one experiment, its one failed confirmation, nobody to retarget
    assert re.search(r"checkout_button\s+control\s+1\s+0\s+0\.0%\s+control", text)
    assert re.search(r"checkout_button\s+B\s+1\s+1\s+100\.0%", text)
    assert "retargeting audience: 0 users" in text and "alerts: email_failed 1" in text

    png = (lake / "reports" / "funnel.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 800 and height > 400
    page = (lake / "reports" / "funnel.html").read_text()
    assert "payment_successful" in page and '<table id="experiments">' in page
    assert "<script src=" not in page  # self-contained (tests/test_explorer.py checks nothing is fetched)
