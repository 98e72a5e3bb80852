"""Statistics of online experiments: per-user estimates, always-valid tests, sample-ratio checks,
minimum detectable effects and team-draft interleaving. Pure functions (numpy + scipy.stats).

Why these choices (docs/serving.md, "A/B tests", says the same for users):

- **The user is the unit.** Users are randomised, so users are the independent trials. A metric per
  impression (share of lists with a click) is a ratio of two per-user sums; its variance comes from
  the delta method over users (the cluster-robust variance with the user as cluster), so one heavy
  user does not count as hundreds of independent trials.
- **Looking is free.** The decision is the mixture sequential probability ratio test (mSPRT; Johari,
  Pekelis, Walsh, "Always valid inference", 2017/2022): with a normal mixing distribution
  ``N(0, tau^2)`` over the true difference, ``Lambda_n`` is a non-negative martingale under the null,
  so by Ville's inequality ``P(Lambda_n >= 1/alpha for some n) <= alpha`` however often one looks.
  The always-valid p-value is the running minimum of ``1/Lambda_n``. The variance is plugged in
  (estimated), which is why at least ``min_users`` per arm are required before it may answer.
- **Sample-ratio mismatch** is tested sequentially too: a beta-binomial mixture Bayes factor of
  the observed arm-b count against ``share_b`` (the two-arm case of Lindon & Malek's sequential
  multinomial test), flagged at ``BF >= 1/srm_alpha``; the classical chi-square p-value is shown
  beside it.
- **Interleaving** (Radlinski et al. 2008; Chapelle et al., TOIS 2012): team-draft merges the two
  lists, clicks credit the team that contributed the item, each user's net credit decides a win,
  and wins are tested with a binomial test (fixed horizon) and the beta-binomial mixture (always
  valid, the decision).

>>> est = ratio_estimate(np.array([1.0, 0, 2, 1]), np.array([2.0, 1, 3, 2]))
>>> round(est.mean, 4)
0.5
>>> round(msprt_lambda(0.0, 1.0, 1.0), 4)   # no difference: Lambda < 1
0.7071
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from scipy.special import betaln

__all__ = [
    "AnalysisPlan",
    "ArmSample",
    "Estimate",
    "analyse_ab",
    "analyse_interleave",
    "beta_binomial_log_bf",
    "binomial_wins_test",
    "difference_test",
    "interleave_credit",
    "mde",
    "mean_estimate",
    "msprt_lambda",
    "peeking_z_test",
    "ratio_estimate",
    "srm_check",
    "team_draft",
]

METRICS = ("ctr", "positive_per_impression", "positive_per_user")


@dataclass(frozen=True)
class Estimate:
    """A mean (or ratio of means) over users with the variance of that estimate and the user count."""

    mean: float
    var: float
    n: int


@dataclass(frozen=True)
class AnalysisPlan:
    """What the analysis needs from the server config (kept here so this module imports no settings).

    ``tau`` is the mSPRT mixing standard deviation relative to the pooled metric (0.1: differences
    around 10% of the metric's level are the ones the test is tuned to find fastest).
    """

    alpha: float = 0.05
    metric: str = "ctr"
    tau: float = 0.1
    min_users: int = 100
    share_b: float = 0.5
    srm_alpha: float = 0.01
    srm_concentration: float = 200.0
    power: float = 0.8


@dataclass
class ArmSample:
    """Per-user sums of one arm (one entry per user who was shown at least one list).

    ``lists_with_positive``: impressions with at least one attributed positive event;
    ``positives``: attributed positive events; ``rr``: sum of 1/rank over attributed positive
    events with a known rank; ``ranked``: how many attributed positive events had a rank.
    """

    impressions: np.ndarray
    lists_with_positive: np.ndarray
    positives: np.ndarray
    rr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ranked: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def users(self) -> int:
        return len(self.impressions)

    def metric(self, name: str) -> Estimate:
        """The per-user estimate of ``name`` (one of :data:`METRICS`)."""
        if name == "ctr":
            return ratio_estimate(self.lists_with_positive, self.impressions)
        if name == "positive_per_impression":
            return ratio_estimate(self.positives, self.impressions)
        if name == "positive_per_user":
            return mean_estimate(self.positives)
        raise ValueError(f"unknown metric {name!r}; one of {', '.join(METRICS)}")


def mean_estimate(x: np.ndarray) -> Estimate:
    """Mean over users and the variance of that mean (``s^2 / n``, ``ddof=1``)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0:
        return Estimate(float("nan"), float("nan"), 0)
    var = float(np.var(x, ddof=1)) / n if n > 1 else float("inf")
    return Estimate(float(x.mean()), var, n)


def ratio_estimate(num: np.ndarray, den: np.ndarray) -> Estimate:
    """``sum(num) / sum(den)`` over users with its delta-method (user-clustered) variance.

    With ``r = mean(num) / mean(den)`` the variance is ``var(num - r * den) / (n * mean(den)^2)``:
    the sandwich variance with the user as cluster, so correlated impressions of one user are not
    treated as independent. With ``den == 1`` for every user it is the plain ``s^2 / n``.
    """
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    n = len(num)
    if n == 0 or den.sum() <= 0:
        return Estimate(float("nan"), float("nan"), n)
    r = float(num.sum() / den.sum())
    if n < 2:
        return Estimate(r, float("inf"), n)
    resid = num - r * den
    var = float(np.var(resid, ddof=1)) / (n * float(den.mean()) ** 2)
    return Estimate(r, var, n)


def difference_test(a: Estimate, b: Estimate, alpha: float = 0.05) -> dict[str, Any]:
    """Fixed-horizon two-sided z-test of ``b - a`` (unpooled variances) with its confidence interval.

    Valid once, at a sample size fixed in advance; looked at repeatedly it over-rejects (that is
    why the mSPRT, not this, answers at ``/admin/ab``).
    """
    diff = b.mean - a.mean
    se = math.sqrt(a.var + b.var) if np.isfinite(a.var + b.var) else float("nan")
    if not np.isfinite(diff) or not np.isfinite(se) or se <= 0:
        return {"difference": _num(diff), "se": None, "z": None, "p_value": None, "ci": None}
    z = diff / se
    q = float(stats.norm.ppf(1 - alpha / 2))
    return {
        "difference": diff,
        "se": se,
        "z": z,
        "p_value": float(2 * stats.norm.sf(abs(z))),
        "ci": [diff - q * se, diff + q * se],
    }


def msprt_lambda(diff: float, var: float, tau2: float) -> float:
    """The mSPRT statistic for a normal difference with variance ``var`` and mixing variance ``tau2``.

    ``Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 * d^2 / (2 V (V + tau^2)))`` (Johari et al., eq. 11
    with ``V`` the variance of the estimated difference ``d``). Computed in logs; capped at 1e300.
    """
    if not (np.isfinite(diff) and np.isfinite(var)) or var <= 0 or tau2 <= 0:
        return 1.0
    log_l = 0.5 * math.log(var / (var + tau2)) + tau2 * diff * diff / (2 * var * (var + tau2))
    return math.exp(min(log_l, 690.0))


def beta_binomial_log_bf(x: float, n: float, p0: float, concentration: float) -> float:
    """log Bayes factor of ``x`` successes in ``n`` against ``p = p0``, mixing ``p ~ Beta(c p0, c (1-p0))``.

    Under ``p = p0`` the factor is a non-negative martingale with mean 1, so (Ville) it exceeds
    ``1/alpha`` at any time with probability at most ``alpha``: an always-valid binomial test.
    """
    a, b = concentration * p0, concentration * (1 - p0)
    return float(betaln(a + x, b + n - x) - betaln(a, b) - (x * math.log(p0) + (n - x) * math.log1p(-p0)))


def srm_check(
    n_a: int, n_b: int, share_b: float, alpha: float, concentration: float = 200.0
) -> dict[str, Any]:
    """Sample-ratio mismatch: is the observed split of users compatible with ``share_b``?

    ``flagged`` comes from the always-valid beta-binomial test (checking at every look is fine);
    the chi-square goodness-of-fit p-value is shown for reference.
    """
    n = n_a + n_b
    out: dict[str, Any] = {"users_a": n_a, "users_b": n_b, "expected_share_b": share_b, "alpha": alpha}
    if n == 0 or share_b <= 0 or share_b >= 1:
        return {**out, "observed_share_b": None, "flagged": False, "bayes_factor": None, "chi2_p_value": None}
    log_bf = beta_binomial_log_bf(n_b, n, share_b, concentration)
    chi = stats.chisquare([n_a, n_b], [n * (1 - share_b), n * share_b])
    return {
        **out,
        "observed_share_b": n_b / n,
        "bayes_factor": math.exp(min(log_bf, 690.0)),
        "flagged": bool(log_bf >= math.log(1 / alpha)),
        "chi2_p_value": float(chi.pvalue),
        "method": "sequential beta-binomial mixture test (always valid); chi-square p-value for reference",
    }


def mde(var_a_unit: float, var_b_unit: float, n_a: int, n_b: int, alpha: float, power: float) -> float | None:
    """Smallest true difference a fixed-horizon two-sided test at ``alpha`` detects with ``power``.

    ``(z_{1-alpha/2} + z_{power}) * sqrt(s_a^2 / n_a + s_b^2 / n_b)`` with per-user variances ``s^2``.
    """
    if n_a < 2 or n_b < 2 or not (np.isfinite(var_a_unit) and np.isfinite(var_b_unit)):
        return None
    k = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    return k * math.sqrt(var_a_unit / n_a + var_b_unit / n_b)


def peeking_z_test(x_a: int, n_a: int, x_b: int, n_b: int) -> float | None:
    """The test ``/admin/ab`` used before: pooled two-proportion z on events per list, events capped
    at the number of lists. Kept only so the benchmark can show how often it is wrong; p-value."""
    if n_a == 0 or n_b == 0:
        return None
    x_a, x_b = min(x_a, n_a), min(x_b, n_b)
    pooled = (x_a + x_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0
    return float(math.erfc(abs(x_b / n_b - x_a / n_a) / se / math.sqrt(2)))


def _num(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def analyse_ab(a: ArmSample, b: ArmSample, plan: AnalysisPlan, running_p: float = 1.0) -> dict[str, Any]:
    """Everything ``/admin/ab`` reports for an A/B split, and which test answered and why.

    ``running_p`` is the smallest always-valid p-value of earlier looks (1.0 if none): the
    always-valid p-value is the running minimum, so a decision once reached stands.
    """
    srm = srm_check(a.users, b.users, plan.share_b, plan.srm_alpha, plan.srm_concentration)
    ea, eb = a.metric(plan.metric), b.metric(plan.metric)
    fixed = difference_test(ea, eb, plan.alpha)
    out: dict[str, Any] = {"metric": plan.metric, "srm": srm, "fixed_horizon": fixed}
    pooled = (ea.mean * ea.n + eb.mean * eb.n) / max(ea.n + eb.n, 1)
    tau2 = (plan.tau * pooled) ** 2 if np.isfinite(pooled) else 0.0
    lam = msprt_lambda(eb.mean - ea.mean, ea.var + eb.var, tau2)
    enough = min(a.users, b.users) >= plan.min_users
    p_now = min(1.0, 1.0 / lam) if enough else 1.0
    p_av = min(running_p, p_now)
    out["sequential"] = {
        "method": f"mSPRT (normal mixture, tau = {plan.tau:.3g} x pooled metric)",
        "lambda": lam,
        "threshold": 1 / plan.alpha,
        "p_value": p_av,
        "tau": math.sqrt(tau2),
        "difference": _num(eb.mean - ea.mean),
    }
    out["mde"] = _mde_block(ea, eb, plan)
    out["decision"] = _decide(out, plan, p_av, enough, srm["flagged"])
    return out


def _mde_block(ea: Estimate, eb: Estimate, plan: AnalysisPlan) -> dict[str, Any]:
    """MDE of the fixed-horizon test for the users so far (absolute, and relative to arm a)."""
    m = mde(ea.var * ea.n, eb.var * eb.n, ea.n, eb.n, plan.alpha, plan.power)
    rel = m / ea.mean if m is not None and np.isfinite(ea.mean) and ea.mean > 0 else None
    return {"absolute": m, "relative_to_a": rel, "alpha": plan.alpha, "power": plan.power}


def _decide(out: dict[str, Any], plan: AnalysisPlan, p_av: float, enough: bool, srm: bool) -> dict[str, Any]:
    """Which test answered, what it says, and why that test."""
    seq = out["sequential"]
    if srm:
        return {
            "test": "sample-ratio mismatch",
            "significant": False,
            "winner": None,
            "why": "the observed split differs from share_b (always-valid SRM test): assignment or logging "
            "is broken, so no comparison of the arms can be trusted until it is fixed",
        }
    if not enough:
        return {
            "test": "none yet",
            "significant": False,
            "winner": None,
            "why": f"fewer than min_users={plan.min_users} users in an arm: the plug-in variance of the "
            "sequential test is not reliable yet",
        }
    sig = p_av < plan.alpha
    diff = seq["difference"]
    return {
        "test": "mSPRT",
        "significant": sig,
        "winner": ("b" if diff > 0 else "a") if sig and diff else None,
        "p_value": p_av,
        "why": "always-valid sequential test on per-user data: the report may be read after every user "
        "and the chance of ever declaring a difference that is not there stays below alpha; the "
        "fixed-horizon z-test beside it is valid only at a sample size fixed in advance",
    }


# ---------------------------------------------------------------------------------------- interleaving
def team_draft(
    list_a: Sequence[Any], list_b: Sequence[Any], k: int, rng: np.random.Generator
) -> tuple[list[Any], list[str]]:
    """Team-draft interleaving (Radlinski, Kurup, Joachims 2008): the team with fewer picks (a coin
    flip on ties) adds its highest-ranked item not yet shown; returns the list and each item's team.

    >>> team_draft(["x", "y"], ["x", "z"], 3, np.random.default_rng(0))
    (['x', 'y', 'z'], ['b', 'a', 'b'])
    """
    out: list[Any] = []
    teams: list[str] = []
    shown: set[Any] = set()
    ia = ib = na = nb = 0
    k = min(k, len(set(list_a) | set(list_b)))
    while len(out) < k:
        pick_a = na < nb or (na == nb and bool(rng.random() < 0.5))
        src, i = (list_a, ia) if pick_a else (list_b, ib)
        while i < len(src) and src[i] in shown:
            i += 1
        if i >= len(src):  # this team ran out: the other one fills
            pick_a = not pick_a
            src, i = (list_a, ia) if pick_a else (list_b, ib)
            while i < len(src) and src[i] in shown:
                i += 1
        out.append(src[i])
        shown.add(src[i])
        teams.append("a" if pick_a else "b")
        if pick_a:
            ia, na = i + 1, na + 1
        else:
            ib, nb = i + 1, nb + 1
    return out, teams


def interleave_credit(teams: Sequence[str], clicked_ranks: Sequence[int]) -> tuple[int, int]:
    """Clicks credited to team a and team b (ranks are 1-based positions in the interleaved list)."""
    ca = sum(1 for r in clicked_ranks if 1 <= r <= len(teams) and teams[r - 1] == "a")
    cb = sum(1 for r in clicked_ranks if 1 <= r <= len(teams) and teams[r - 1] == "b")
    return ca, cb


def binomial_wins_test(wins_a: int, wins_b: int) -> float | None:
    """Two-sided exact binomial test of ``wins_b`` out of ``wins_a + wins_b`` against 1/2."""
    n = wins_a + wins_b
    if n == 0:
        return None
    return float(stats.binomtest(wins_b, n, 0.5).pvalue)


def analyse_interleave(
    credit_a: np.ndarray,
    credit_b: np.ndarray,
    impressions: np.ndarray,
    plan: AnalysisPlan,
    running_p: float = 1.0,
) -> dict[str, Any]:
    """Per-user wins from net credit, the binomial test (fixed horizon), the always-valid mixture test
    (the decision) and the mean per-user preference ``(wins_b - wins_a) / users``."""
    credit_a, credit_b = np.asarray(credit_a), np.asarray(credit_b)
    wins_a = int((credit_a > credit_b).sum())
    wins_b = int((credit_b > credit_a).sum())
    ties = int(len(credit_a) - wins_a - wins_b)
    n = wins_a + wins_b
    log_bf = beta_binomial_log_bf(wins_b, n, 0.5, plan.srm_concentration) if n else 0.0
    enough = len(credit_a) >= plan.min_users
    p_now = min(1.0, math.exp(-log_bf)) if enough else 1.0
    p_av = min(running_p, p_now)
    sig = p_av < plan.alpha
    winner = ("b" if wins_b > wins_a else "a") if sig and wins_a != wins_b else None
    why = (
        "always-valid beta-binomial mixture test on per-user wins (a user wins for the team whose items "
        "got more of their attributed clicks; ties count for neither): the report may be read at any "
        "time; the exact binomial test beside it is valid only at a sample size fixed in advance"
    )
    if not enough:
        why = f"fewer than min_users={plan.min_users} users with interleaved lists"
    return {
        "users": len(credit_a),
        "impressions": int(np.asarray(impressions).sum()),
        "credit_a": int(credit_a.sum()),
        "credit_b": int(credit_b.sum()),
        "wins_a": wins_a,
        "wins_b": wins_b,
        "ties": ties,
        "preference_b": (wins_b - wins_a) / len(credit_a) if len(credit_a) else None,
        "binomial_p_value": binomial_wins_test(wins_a, wins_b),
        "sequential": {
            "method": "beta-binomial mixture on wins",
            "bayes_factor": math.exp(min(log_bf, 690.0)),
            "threshold": 1 / plan.alpha,
            "p_value": p_av,
        },
        "decision": {
            "test": "interleaving: sequential binomial" if enough else "none yet",
            "significant": sig and enough,
            "winner": winner if enough else None,
            "p_value": p_av,
            "why": why,
        },
    }
