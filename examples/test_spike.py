"""A spike test to copy into a CI pipeline.

The service takes a steady 50 requests/s, then a spike to 300/s. At the peak, an action stalls it for half a
second (here the built-in target's ``/__freeze``; in your pipeline: fail over the database, roll a deploy,
kill a pod). The test then asserts what the stall did, on the profile's own clock:

- during the spike the tail shows the stall: latency counts from each request's *intended* send time, so
  the requests the stalled service kept waiting are in the p99 (no coordinated omission);
- after it, the service is back to its normal latency;
- nothing was dropped by the generator, and the action ran.

Run it with ``pytest -m load examples/`` (load tests are skipped without ``-m load``). The results, the HTML
report (with the action marked on every timeline) and the Markdown summary land in the test's folder, or
under ``--loadgen-out DIR``.
"""

from __future__ import annotations

import urllib.request

from loadgen import Profile, Request, spike
from loadgen.pytest_plugin import LoadgenFixture


def test_a_stall_at_the_peak_shows_in_the_tail_and_the_service_recovers(
    loadgen: LoadgenFixture, target: str
) -> None:
    profile = Profile(
        name="spike-and-stall",
        target=target,
        load=spike(base=50, peak=300, before="5s", spike="6s", after="10s", arrival="constant"),
        requests=[Request("/", name="home", weight=3), Request("/delay?ms=5", name="slow")],
        thresholds=["error_rate < 1%"],
    )

    def stall() -> None:
        urllib.request.urlopen(f"{target}/__freeze?ms=500", timeout=10).read()

    results = loadgen(profile.at("8s", stall), agents=2)

    during = results.window("5s", "11s")  # the spike: 300 requests/s
    after = results.window("14s", "21s")  # back at 50/s, three seconds after the spike
    assert during.latency.p99 > 0.3  # the half-second stall is in the tail
    assert after.latency.p99 < 0.1  # and the service recovered
    assert results.totals.dropped == 0
    assert [e.fields["outcome"] for e in results.events_of("action_finished")] == ["ok"]
