"""The A/B readout on generated data with known truth (fixed seeds: the
outcomes below are deterministic, not thresholds that flake)."""

import pytest

from pipelines import backfill, gold_daily
from simulator import traffic
from tests.conftest import read_table


def readout(tmp_path, cfg: traffic.Config) -> dict:
    traffic.generate(cfg, str(tmp_path / "landing"))
    lake = tmp_path / "lake"
    backfill.main(["--input", str(tmp_path / "landing" / "*.jsonl"), "--lake", str(lake)])
    gold_daily.main(["--lake", str(lake)])
    return {(r["experiment"], r["variant"]): r for r in read_table(lake / "gold" / "mart_ab_test")}


def test_at_demo_size_the_true_effect_is_found_and_the_a_a_test_shows_none(tmp_path):
    cfg = traffic.Config(users=20000, days=7, seed=42)  # what `make demo` generates
    rows = readout(tmp_path, cfg)
    effect = rows[("checkout_button", "B")]
    assert effect["p_value"] < 0.01 and effect["ci_low"] > 0  # true effect: +10 points of checkout rate
    assert effect["srm_flag"] is False
    aa = rows[("banner_color", "B")]
    assert aa["p_value"] > 0.05 and aa["ci_low"] < 0 < aa["ci_high"] and aa["srm_flag"] is False


@pytest.mark.parametrize("b_share,flagged", [(0.56, True), (0.5, False)])
def test_sample_ratio_mismatch_is_flagged_when_injected(tmp_path, b_share, flagged):
    rows = readout(tmp_path, traffic.Config(users=4000, days=3, seed=5, b_share=b_share))
    assert rows[("checkout_button", "B")]["srm_flag"] is flagged
    assert rows[("checkout_button", "control")]["srm_flag"] is flagged
    assert rows[("banner_color", "A")]["srm_flag"] is False  # the other experiment's split stays even
