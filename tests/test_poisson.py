"""Poisson arrivals are Poisson: tested by their distribution, not only by their count.

Every check here is a statistical test at a fixed significance level on fixed seeds, so it is deterministic,
and each comes with a schedule that is *not* Poisson failing the same check, so the check can fail:

- the gaps between arrivals at a constant rate ``r`` are exponential with mean ``1/r``: a one-sample
  Kolmogorov-Smirnov test against that CDF (rate known, nothing fitted), rejected at alpha = 0.001 when
  ``D > 1.949 / sqrt(n)`` (the asymptotic critical value ``sqrt(-ln(alpha/2) / 2)``, accurate for the n used);
- the counts in 1 s windows have variance equal to their mean: the index of dispersion
  ``Σ (x - x̄)² / x̄`` over ``k`` windows is chi-squared with ``k - 1`` degrees of freedom for a Poisson
  process; the bounds are its 0.0005 and 0.9995 quantiles (Wilson-Hilferty, exact to well under 1% here);
- a non-homogeneous process through the time-rescaling theorem: mapped through the integrated rate Λ(t),
  the arrival times become a unit-rate Poisson process, whose gaps are Exp(1).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from agents.arrivals import ArrivalLoop, RequestPicker
from agents.engine import Due
from agents.recorder import Recorder
from coordinator.split import split
from loadgen.curve import RateCurve
from loadgen.profile import Stage
from loadgen.schedule import ArrivalSchedule
from tests.conftest import Target, loadgen, read_results, write_profile

KS_CRITICAL_001 = math.sqrt(-math.log(0.001 / 2) / 2)  # 1.9495...
Z_00005 = 3.2905  # the standard normal's 0.9995 quantile (two-sided alpha = 0.001)


def ks_statistic(samples: Sequence[float], cdf: object) -> float:
    """The Kolmogorov-Smirnov distance between the samples' empirical CDF and ``cdf``."""
    xs = sorted(samples)
    n = len(xs)
    d = 0.0
    for i, x in enumerate(xs):
        f = cdf(x)  # type: ignore[operator]
        d = max(d, (i + 1) / n - f, f - i / n)
    return d


def exponential_ks(gaps: Sequence[float], rate: float) -> float:
    """The KS distance of ``gaps`` from Exp(``rate``), scaled by sqrt(n): compare with 1.949 (alpha = 0.001)."""
    return ks_statistic(gaps, lambda x: 1.0 - math.exp(-rate * x)) * math.sqrt(len(gaps))


def gaps(times: Sequence[float]) -> list[float]:
    """The gaps between arrivals, the first one measured from 0."""
    return [b - a for a, b in zip([0.0, *times[:-1]], times, strict=True)]


def chi2_quantile(p_z: float, dof: int) -> float:
    """The chi-squared quantile at standard normal quantile ``p_z`` (Wilson-Hilferty)."""
    a = 2.0 / (9.0 * dof)
    return dof * (1.0 - a + p_z * math.sqrt(a)) ** 3


def dispersion(times: Sequence[float], seconds: int) -> tuple[float, int]:
    """The index of dispersion of the counts in 1 s windows over ``[0, seconds)``, and its degrees of
    freedom."""
    counts = [0] * seconds
    for t in times:
        if t < seconds:
            counts[int(t)] += 1
    mean = sum(counts) / seconds
    return sum((c - mean) ** 2 for c in counts) / mean, seconds - 1


def dispersion_ok(times: Sequence[float], seconds: int) -> bool:
    stat, dof = dispersion(times, seconds)
    return chi2_quantile(-Z_00005, dof) <= stat <= chi2_quantile(Z_00005, dof)


def steady(rate: float, seconds: float) -> RateCurve:
    return RateCurve(rate, [Stage(seconds, rate)])


def poisson(curve: RateCurve, seed: int, share: float = 1.0, phase: float = 1.0, start: float = 0.0) -> list:
    return list(ArrivalSchedule(curve, "poisson", share, phase, random.Random(seed), start))


def chi2_cdf(x: float, dof: int) -> float:
    """The chi-squared CDF: the regularized lower incomplete gamma P(dof/2, x/2) by its power series."""
    a, y = dof / 2.0, x / 2.0
    term = total = 1.0 / a
    n = 0
    while term > 1e-17 * total:
        n += 1
        term *= y / (a + n)
        total += term
    return total * math.exp(-y + a * math.log(y) - math.lgamma(a))


@pytest.mark.parametrize("dof", [99, 199])
def test_the_dispersion_bounds_are_the_chi_squared_quantiles(dof: int) -> None:
    """The approximation's own check, against the CDF computed another way."""
    assert chi2_cdf(chi2_quantile(-Z_00005, dof), dof) == pytest.approx(0.0005, abs=0.00005)
    assert chi2_cdf(chi2_quantile(Z_00005, dof), dof) == pytest.approx(0.9995, abs=0.00005)
    assert pytest.approx(1.9495, abs=1e-4) == KS_CRITICAL_001


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_gaps_at_a_constant_rate_are_exponential_with_the_known_mean(seed: int) -> None:
    rate = 50.0
    times = poisson(steady(rate, 100), seed)
    assert 4500 < len(times) < 5500
    assert exponential_ks(gaps(times), rate) < KS_CRITICAL_001


def test_evenly_spaced_arrivals_fail_the_exponential_check() -> None:
    rate = 50.0
    times = list(ArrivalSchedule(steady(rate, 100), "constant"))
    assert len(times) == 5000  # the same count: a count check alone cannot tell them apart
    assert exponential_ks(gaps(times), rate) > 10 * KS_CRITICAL_001


def test_gaps_at_the_wrong_rate_fail_the_exponential_check() -> None:
    """Poisson, but not at the curve's rate: the KS check knows the rate, it does not fit it."""
    times = poisson(steady(50.0, 100), 1)
    assert exponential_ks(gaps(times), 45.0) > KS_CRITICAL_001


@pytest.mark.parametrize("seed", [4, 5])
def test_counts_per_second_have_variance_equal_to_the_mean(seed: int) -> None:
    times = poisson(steady(80.0, 200), seed)
    assert dispersion_ok(times, 200), dispersion(times, 200)


def test_evenly_spaced_counts_fail_the_dispersion_check() -> None:
    times = list(ArrivalSchedule(steady(80.0, 200), "constant"))
    stat, dof = dispersion(times, 200)
    assert stat < chi2_quantile(-Z_00005, dof)  # far too regular: every second holds exactly 80


def rescaled_gaps(times: Sequence[float], integral: object) -> list[float]:
    """Time-rescaling: the gaps of Λ(t_k), which are Exp(1) for a Poisson process of intensity dΛ/dt."""
    return gaps([integral(t) for t in times])  # type: ignore[operator]


RAMP = [Stage(20, 400.0), Stage(0, 50.0), Stage(10, 50.0), Stage(10, 300.0)]


@pytest.mark.parametrize("seed", [6, 7])
def test_a_ramp_is_a_non_homogeneous_poisson_process(seed: int) -> None:
    curve = RateCurve(0, RAMP)
    times = poisson(curve, seed)
    assert len(times) == pytest.approx(curve.total, rel=0.05)
    assert exponential_ks(rescaled_gaps(times, curve.integral), 1.0) < KS_CRITICAL_001


def test_a_homogeneous_process_fails_the_rescaled_check_of_a_ramp() -> None:
    """The same number of arrivals at the ramp's mean rate is not the ramp's process."""
    curve = RateCurve(0, RAMP)
    flat = poisson(steady(curve.total / curve.duration, curve.duration), 6)
    assert exponential_ks(rescaled_gaps(flat, curve.integral), 1.0) > KS_CRITICAL_001


def fleet(curve: RateCurve, n: int, seed: int, seeds: Sequence[int] | None = None) -> list[float]:
    """The merged arrivals of ``n`` agents with the shares and phases of the split, and the seeds the
    coordinator gives them at the start (``seed + 7919 * i``) unless ``seeds`` says otherwise."""
    shares = split([f"agent-{i}" for i in range(n)])
    seeds = seeds if seeds is not None else [seed + 7919 * i for i in range(n)]
    return sorted(
        t for sh, s in zip(shares, seeds, strict=True) for t in poisson(curve, s, sh.share, sh.phase)
    )


@pytest.mark.parametrize("seed", [11, 12345])
def test_four_agents_merge_into_a_poisson_stream_at_the_fleet_rate(seed: int) -> None:
    rate = 100.0
    curve = steady(rate, 100)
    times = fleet(curve, 4, seed)
    assert len(times) == pytest.approx(10_000, rel=0.05)
    assert exponential_ks(gaps(times), rate) < KS_CRITICAL_001
    assert dispersion_ok(times, 100), dispersion(times, 100)
    # and through a ramp
    ramp = RateCurve(0, RAMP)
    assert exponential_ks(rescaled_gaps(fleet(ramp, 4, seed), ramp.integral), 1.0) < KS_CRITICAL_001


def test_agents_sharing_one_seed_fail_the_fleet_check() -> None:
    """Four agents on the same random stream send in lockstep: four arrivals at every instant."""
    rate = 100.0
    times = fleet(steady(rate, 100), 4, 0, seeds=[42] * 4)
    assert exponential_ks(gaps(times), rate) > 10 * KS_CRITICAL_001
    assert not dispersion_ok(times, 100)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.001)


class _Engine:
    """Answers nothing and records the intended time of every submitted request."""

    def __init__(self) -> None:
        self.intended: list[float] = []
        self.due = Due()
        self.in_flight = 0

    def submit(self, req: int, intended: float) -> None:
        self.intended.append(intended)


def _switched(curve: RateCurve, first: ArrivalSchedule, second: ArrivalSchedule, at: float) -> list[float]:
    """The arrivals an agent's loop sends: ``first`` until ``at``, then ``second`` (a reshare)."""
    clock = _Clock()
    engine = _Engine()
    loop = ArrivalLoop(
        first,
        engine,  # type: ignore[arg-type]
        Recorder(["a"]),
        RequestPicker([1], random.Random(1)),
        start=0.0,
        max_in_flight=10**9,
        clock=clock,
        sleep=clock.sleep,
    )
    loop.switch(second, at)
    asyncio.run(loop.run())
    return engine.intended


@pytest.mark.parametrize("seed", [21, 22])
def test_a_reshare_continues_a_poisson_stream_at_the_new_share(seed: int) -> None:
    """One of two agents (share 1/2) becomes one of three (share 1/3) at t = 60 s, as a joiner makes it:
    its arrivals form one Poisson process of intensity ``share(t) · rate(t)``, across the switch too."""
    curve = RateCurve(0, [Stage(30, 300.0), Stage(90, 300.0)])
    at = 60.0
    old, new = split(["a", "b"])[0], split(["a", "b", "c"])[0]
    first = ArrivalSchedule(curve, "poisson", old.share, old.phase, random.Random(seed))
    second = ArrivalSchedule(curve, "poisson", new.share, new.phase, random.Random(seed + 104729), at)
    times = _switched(curve, first, second, at)
    assert times == sorted(times)

    def agent_integral(t: float) -> float:
        if t <= at:
            return old.share * curve.integral(t)
        return old.share * curve.integral(at) + new.share * curve.between(at, t)

    expected = agent_integral(curve.duration)
    assert len(times) == pytest.approx(expected, rel=0.05)
    assert exponential_ks(rescaled_gaps(times, agent_integral), 1.0) < KS_CRITICAL_001
    after = [t for t in times if t >= at]
    assert exponential_ks(gaps([t - at for t in after]), new.share * 300.0) < KS_CRITICAL_001
    # still at the old share after the switch is not this process
    assert exponential_ks(gaps([t - at for t in after]), old.share * 300.0) > KS_CRITICAL_001


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    curve = RateCurve(0, RAMP)
    assert poisson(curve, 99) == poisson(curve, 99)
    assert poisson(curve, 99, 0.25, 0.5, start=3.0) == poisson(curve, 99, 0.25, 0.5, start=3.0)
    a, b = poisson(curve, 99), poisson(curve, 100)
    assert a != b
    assert len(set(a) & set(b)) == 0  # not a shifted copy: no arrival in common


@pytest.mark.integration
def test_a_real_run_with_a_seed_repeats_its_arrivals(target: Target, tmp_path: Path) -> None:
    """``loadgen run --seed N``: the fleet's per-second arrival counts are the same run after run, and
    another seed gives others."""
    prof = write_profile(
        tmp_path / "seeded.toml",
        target.url,
        '[{duration = "0s", rate = 100}, {duration = "3s", rate = 100}]',
        arrival="poisson",
    )

    def per_second(seed: int, name: str) -> list[int]:
        out = tmp_path / name
        r = loadgen("run", str(prof), "--agents", "2", "--seed", str(seed), "--out", str(out), timeout=60)
        assert r.returncode == 0, r.stderr
        res = read_results(out)
        return [iv["scheduled"] for iv in res["intervals"]]

    first, again, other = per_second(7, "a"), per_second(7, "b"), per_second(8, "c")
    assert sum(first) == pytest.approx(300, abs=60)
    assert first == again
    assert other != first
