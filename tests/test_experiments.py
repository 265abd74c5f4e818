"""The A/B readout's statistics against statsmodels and scipy, and its edge cases."""

import math

import pytest
from scipy.stats import chisquare
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from transforms.rules import experiments

CASES = [(480, 4000, 400, 4000), (61, 500, 50, 510), (3, 40, 9, 38), (1000, 20000, 1000, 20000), (0, 50, 2, 60)]


@pytest.mark.parametrize("x1,n1,x2,n2", CASES)
def test_z_test_and_interval_equal_statsmodels(x1, n1, x2, n2):
    _, expected_p = proportions_ztest([x1, x2], [n1, n2])
    assert experiments.z_test(x1, n1, x2, n2) == pytest.approx(expected_p, rel=1e-9, abs=1e-15)
    low, high = confint_proportions_2indep(x1, n1, x2, n2, method="wald", compare="diff", alpha=0.05)
    got = experiments.diff_interval(x1, n1, x2, n2)
    assert got == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))


@pytest.mark.parametrize("sessions", [[5000, 5000], [5000, 5300], [100, 130, 90], [1, 0]])
def test_srm_equals_scipy_chisquare(sessions):
    assert experiments.srm_p_value(sessions) == pytest.approx(chisquare(sessions).pvalue, rel=1e-12)


def _counts(experiment, variant, sessions, paid):
    return {
        "experiment": experiment,
        "variant": variant,
        "sessions": sessions,
        "sessions_browse": sessions,
        "sessions_add_to_cart": paid,
        "sessions_payment": paid,
        "sessions_email_confirmation": paid,
        "sessions_barcode_scanned": 0,
    }


def test_readout_compares_every_variant_with_the_control():
    rows = {
        (r["experiment"], r["variant"]): r
        for r in experiments.readout(
            [
                _counts("checkout", "control", 1000, 100),
                _counts("checkout", "B", 1000, 150),
                _counts("checkout", "C", 900, 90),
                _counts("banner", "A", 500, 50),
                _counts("banner", "B", 520, 52),
                _counts("solo", "X", 10, 1),
            ]
        )
    }
    control, b = rows[("checkout", "control")], rows[("checkout", "B")]
    assert control["is_control"] and control["lift_vs_control"] is None and control["p_value"] is None
    assert b["conversion_rate"] == 0.15 and b["diff_vs_control"] == pytest.approx(0.05)
    assert b["lift_vs_control"] == pytest.approx(0.5)
    assert b["p_value"] == pytest.approx(proportions_ztest([150, 100], [1000, 1000])[1])
    assert b["srm_p_value"] == pytest.approx(chisquare([1000, 1000, 900]).pvalue)
    assert b["srm_flag"] is (b["srm_p_value"] < 0.001)
    assert rows[("banner", "A")]["is_control"]  # no variant named control: A is
    assert rows[("banner", "B")]["lift_vs_control"] == pytest.approx(52 / 520 / 0.1 - 1)
    solo = rows[("solo", "X")]  # no control, one variant: nothing to compare, no SRM
    assert not solo["is_control"] and solo["p_value"] is None and solo["srm_p_value"] is None
    assert all(v is None or not isinstance(v, float) or math.isfinite(v) for r in rows.values() for v in r.values())


def test_a_zero_variance_gives_null_not_nan():
    rows = experiments.readout([_counts("e", "control", 10, 0), _counts("e", "B", 10, 0)])
    b = [r for r in rows if r["variant"] == "B"][0]
    assert b["p_value"] is None and b["lift_vs_control"] is None and b["diff_vs_control"] == 0
