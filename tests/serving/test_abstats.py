"""The experiment statistics (modalrec.serving.abstats): estimates, always-valid tests, SRM, MDE,
team-draft interleaving. Rules that hold for every input are property tests (hypothesis, derandomised)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from modalrec.serving.abstats import (
    AnalysisPlan,
    ArmSample,
    Estimate,
    analyse_ab,
    analyse_interleave,
    beta_binomial_log_bf,
    difference_test,
    interleave_credit,
    mde,
    mean_estimate,
    msprt_lambda,
    peeking_z_test,
    ratio_estimate,
    srm_check,
    team_draft,
)

PROPS = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@PROPS
@given(st.lists(st.floats(0, 50), min_size=2, max_size=40))
def test_ratio_with_unit_denominators_is_the_mean(x: list[float]) -> None:
    a = np.asarray(x)
    r, m = ratio_estimate(a, np.ones_like(a)), mean_estimate(a)
    assert r.mean == pytest.approx(m.mean) and r.var == pytest.approx(m.var, rel=1e-9, abs=1e-12)


def test_ratio_variance_matches_the_cluster_bootstrap() -> None:
    """The delta-method (user-clustered) variance agrees with resampling whole users."""
    rng = np.random.default_rng(0)
    den = rng.geometric(0.2, 400).astype(float)
    num = rng.binomial(den.astype(int), rng.beta(2, 6, 400)).astype(float)
    est = ratio_estimate(num, den)
    idx = rng.integers(0, 400, (4000, 400))
    boot = num[idx].sum(1) / den[idx].sum(1)
    assert est.var == pytest.approx(boot.var(), rel=0.12)
    # treating every impression as independent understates it when users differ
    p = num.sum() / den.sum()
    assert p * (1 - p) / den.sum() < 0.8 * est.var


@PROPS
@given(st.floats(-5, 5), st.floats(0.01, 10), st.floats(0.01, 10))
def test_msprt_lambda_is_symmetric_and_grows_with_the_difference(d: float, var: float, tau2: float) -> None:
    lam = msprt_lambda(d, var, tau2)
    assert lam == pytest.approx(msprt_lambda(-d, var, tau2))
    assert msprt_lambda(abs(d) + 0.5, var, tau2) > lam >= msprt_lambda(0.0, var, tau2)
    assert msprt_lambda(0.0, var, tau2) < 1


@settings(max_examples=6, deadline=None, derandomize=True)
@given(st.floats(0.1, 3.0), st.floats(0.05, 2.0), st.sampled_from([0.05, 0.1]), st.integers(0, 10**6))
def test_msprt_controls_type_one_error_under_continuous_monitoring(
    sigma: float, tau: float, alpha: float, seed: int
) -> None:
    """Null streams of 300 observations per arm, looked at after every pair: the share that ever
    crosses 1/alpha stays at or below alpha (up to binomial noise of 400 streams)."""
    rng = np.random.default_rng(seed)
    n, streams = 300, 400
    xa = rng.normal(0, sigma, (streams, n)).cumsum(1)
    xb = rng.normal(0, sigma, (streams, n)).cumsum(1)
    t = np.arange(1, n + 1)
    d = (xb - xa) / t
    v = 2 * sigma**2 / t  # known variance: the exact martingale case
    log_l = 0.5 * np.log(v / (v + tau**2)) + tau**2 * d**2 / (2 * v * (v + tau**2))
    crossed = (log_l >= math.log(1 / alpha)).any(1).mean()
    assert crossed <= alpha + 2.5 * math.sqrt(alpha * (1 - alpha) / streams)


def test_peeking_at_the_fixed_test_inflates_errors_but_the_sequential_test_does_not() -> None:
    """The reason for the mSPRT: A/A data with the per-user plug-in variance, a look every 50 users."""
    rng = np.random.default_rng(3)
    plan = AnalysisPlan(min_users=50)
    seq = fixed = 0
    for _ in range(40):
        n = 800
        imps = rng.geometric(1 / 3, n).astype(float)
        hits = rng.binomial(imps.astype(int), rng.beta(2, 8, n)).astype(float)
        arm = rng.random(n) < 0.5
        running, s_hit, f_hit = 1.0, False, False
        for m in range(100, n + 1, 50):
            b, a = arm[:m], ~arm[:m]
            res = analyse_ab(
                ArmSample(imps[:m][a], hits[:m][a], hits[:m][a]),
                ArmSample(imps[:m][b], hits[:m][b], hits[:m][b]),
                plan,
                running,
            )
            running = res["sequential"]["p_value"]
            s_hit |= res["decision"]["significant"]
            f_hit |= res["fixed_horizon"]["p_value"] < 0.05
        seq, fixed = seq + s_hit, fixed + f_hit
    assert seq / 40 <= 0.05 and fixed / 40 > 0.1


def test_msprt_finds_a_real_difference_and_names_the_winner() -> None:
    rng = np.random.default_rng(1)
    imps = rng.geometric(1 / 3, 3000).astype(float)
    arm = rng.random(3000) < 0.5
    p = np.where(arm, 0.3, 0.2)
    hits = rng.binomial(imps.astype(int), p).astype(float)
    res = analyse_ab(
        ArmSample(imps[~arm], hits[~arm], hits[~arm]),
        ArmSample(imps[arm], hits[arm], hits[arm]),
        AnalysisPlan(),
    )
    assert res["decision"]["test"] == "mSPRT" and res["decision"]["significant"]
    assert res["decision"]["winner"] == "b" and res["sequential"]["p_value"] < 0.05
    assert 0.08 < res["fixed_horizon"]["difference"] < 0.12


def test_too_few_users_and_srm_stop_the_test() -> None:
    s = ArmSample(np.ones(20), np.ones(20), np.ones(20))
    assert analyse_ab(s, s, AnalysisPlan(min_users=50))["decision"]["test"] == "none yet"
    big = ArmSample(np.ones(800), np.zeros(800), np.zeros(800))
    small = ArmSample(np.ones(500), np.zeros(500), np.zeros(500))
    res = analyse_ab(big, small, AnalysisPlan())
    assert res["srm"]["flagged"] and res["decision"]["test"] == "sample-ratio mismatch"
    assert not res["decision"]["significant"]


def test_srm_flags_45_55_within_2000_users_and_rarely_alarms_at_50_50() -> None:
    rng = np.random.default_rng(5)
    looks = np.arange(50, 2001, 50)
    flagged = {}
    for true in (0.5, 0.55):
        b = np.cumsum(rng.random((100, 2000)) < true, axis=1)[:, looks - 1]
        log_bf = np.vectorize(lambda x, n: beta_binomial_log_bf(x, n, 0.5, 200.0))(b, looks)
        flagged[true] = int((log_bf >= math.log(100)).any(axis=1).sum())
    assert flagged[0.5] <= 2 and flagged[0.55] >= 70
    # srm_check flags exactly by that rule
    for nb, n in ((1100, 2000), (1050, 2000), (560, 1000)):
        want = beta_binomial_log_bf(nb, n, 0.5, 200.0) >= math.log(100)
        assert srm_check(n - nb, nb, 0.5, 0.01, 200.0)["flagged"] == want
    assert srm_check(900, 1100, 0.5, 0.01)["flagged"] and not srm_check(990, 1010, 0.5, 0.01)["flagged"]


@PROPS
@given(st.integers(0, 400), st.integers(0, 400), st.floats(0.1, 0.9), st.floats(1, 1000))
def test_beta_binomial_factor_is_a_likelihood_ratio(x: int, extra: int, p0: float, c: float) -> None:
    """exp(log BF) summed against the null binomial is 1 (it is a martingale with mean 1)."""
    n = x + extra
    if n > 60:
        return
    ks = np.arange(n + 1)
    total = sum(math.exp(beta_binomial_log_bf(k, n, p0, c)) * stats.binom.pmf(k, n, p0) for k in ks)
    assert total == pytest.approx(1.0, rel=1e-6)


def test_chi_square_in_srm_matches_scipy() -> None:
    r = srm_check(480, 520, 0.5, 0.01)
    assert r["chi2_p_value"] == pytest.approx(stats.chisquare([480, 520]).pvalue)
    assert not r["flagged"] and r["observed_share_b"] == pytest.approx(0.52)


def test_mde_matches_the_textbook_formula_and_is_what_the_test_detects() -> None:
    m = mde(1.0, 1.0, 500, 500, 0.05, 0.8)
    assert m == pytest.approx((1.959964 + 0.841621) * math.sqrt(2 / 500), rel=1e-5)
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(400):
        a, b = rng.normal(0, 1, 500), rng.normal(m, 1, 500)
        hits += difference_test(mean_estimate(a), mean_estimate(b))["p_value"] < 0.05
    assert 0.74 < hits / 400 < 0.86
    assert mde(1.0, 1.0, 1, 10, 0.05, 0.8) is None


def test_difference_test_is_welch_z() -> None:
    r = difference_test(Estimate(0.1, 0.0004, 100), Estimate(0.15, 0.0005, 100))
    assert r["z"] == pytest.approx(0.05 / math.sqrt(0.0009))
    assert r["ci"][0] < 0.05 < r["ci"][1]


def test_old_test_treated_event_counts_as_proportions() -> None:
    """The pre-issue-21 test capped events at the number of lists; kept only for the benchmark."""
    assert peeking_z_test(56, 105, 152, 95) == pytest.approx(
        math.erfc(
            abs(1.0 - 56 / 105) / math.sqrt((151 / 200) * (49 / 200) * (1 / 105 + 1 / 95)) / math.sqrt(2)
        )
    )


# ------------------------------------------------------------------------------------------ interleaving
lists = st.lists(st.integers(0, 30), min_size=0, max_size=15, unique=True)


@PROPS
@given(lists, lists, st.integers(1, 20), st.integers(0, 2**32 - 1))
def test_team_draft_invariants(a: list[int], b: list[int], k: int, seed: int) -> None:
    out, teams = team_draft(a, b, k, np.random.default_rng(seed))
    assert len(out) == len(set(out)) == min(k, len(set(a) | set(b)))
    assert set(out) <= set(a) | set(b)
    for team, src in (("a", a), ("b", b)):
        mine = [x for x, t in zip(out, teams, strict=True) if t == team]
        assert all(x in src for x in mine)
        assert [x for x in src if x in mine] == mine, "a team's items keep their order"
    na, nb = teams.count("a"), teams.count("b")
    if len(out) < min(len(a), len(b)):  # neither ran out: picks stay balanced
        assert abs(na - nb) <= 1


@PROPS
@given(st.lists(st.integers(0, 50), min_size=10, max_size=10, unique=True), st.integers(0, 2**32 - 1))
def test_identical_lists_keep_the_order_and_split_credit_fairly(a: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    wins = []
    for _ in range(200):
        out, teams = team_draft(a, a, 10, rng)
        assert out == a
        ca, cb = interleave_credit(teams, [1])
        wins.append(cb > ca)
    assert 0.35 < np.mean(wins) < 0.65


def test_interleave_credit_counts_by_team() -> None:
    assert interleave_credit(["a", "b", "b", "a"], [1, 2, 3, 9]) == (1, 2)


def test_interleave_analysis_detects_the_better_team() -> None:
    rng = np.random.default_rng(4)
    ca = rng.poisson(1.0, 1000)
    cb = rng.poisson(1.4, 1000)
    res = analyse_interleave(ca, cb, np.ones(1000), AnalysisPlan())
    assert res["decision"]["significant"] and res["decision"]["winner"] == "b"
    assert res["wins_a"] + res["wins_b"] + res["ties"] == 1000
    assert res["binomial_p_value"] == pytest.approx(
        stats.binomtest(res["wins_b"], res["wins_a"] + res["wins_b"]).pvalue
    )
    null = analyse_interleave(ca, rng.poisson(1.0, 1000), np.ones(1000), AnalysisPlan())
    assert not null["decision"]["significant"]
