"""Hold the drift detector to its targets on synthetic streams with known truth.

    .venv/bin/python bench/drift_sim.py [--streams 3000] [--stream-weeks 10] [--seeds 20] [--per-hour 100,1000]
                                        [--sd 0.01] [--no-overdispersion] [--calibration]

Two experiments per traffic level (impressions per hour), each run through exactly `gateway.analytics.drift.step`
with the default settings (`--no-overdispersion` turns off only the dispersion correction, to compare):

- False alarms: independent streams with a constant true rate of 10%, each watched hourly for --stream-weeks weeks
  from an empty state (so the start-up, when the baseline is least certain, is included every time). Every alert
  the detector opens is false; an open alert resolves by the detector's own rule and detection then continues.
  Reported: alerts per 100 weeks with an exact (Garwood) 95% Poisson interval.
- Detection: each seed runs `reference + gap + 48` hours at 10%, then steps to 13% at an hour boundary. Reported:
  impressions from the step to the hour whose counts opened the alert (median and quartiles over --seeds seeds),
  and the same for an oracle CUSUM that knows both rates and uses the same threshold.

With --sd, each hour's true rate is drawn from a beta distribution with that standard deviation (overdispersion).
Seeds: --calibration uses seeds from 0 (what the defaults were tuned on); without it, held-out seeds from 1,000,000.
Prints a Markdown table for docs/drift.md.
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.analytics.drift import DEFAULTS, HOUR, DriftSettings, StreamState, log_likelihood_ratio, step  # noqa: E402

HELD_OUT = 1_000_000
WEEK = 168


class Binomial:
    """Exact binomial draws by inverting a precomputed CDF (plain Python, ~1 µs a draw)."""

    def __init__(self, n: int, p: float) -> None:
        self.n = n
        cdf, total = [], 0.0
        pmf = (1 - p) ** n
        for k in range(n + 1):
            total += pmf
            cdf.append(total)
            pmf *= (n - k) / (k + 1) * p / (1 - p)
        self.cdf = cdf

    def draw(self, rng: random.Random) -> int:
        return min(bisect.bisect_right(self.cdf, rng.random()), self.n)


class BetaBinomial:
    """Hours whose true rate varies: each hour's rate is drawn from a beta distribution with mean `p` and standard
    deviation `sd` (overdispersion, as real traffic has), then its count from the binomial at that rate."""

    def __init__(self, n: int, p: float, sd: float) -> None:
        total = p * (1 - p) / (sd * sd) - 1
        self.n, self.a, self.b = n, p * total, (1 - p) * total

    def draw(self, rng: random.Random) -> int:
        p, u, k = rng.betavariate(self.a, self.b), rng.random(), 0
        pmf = cdf = (1 - p) ** self.n
        while cdf < u and k < self.n:
            pmf *= (self.n - k) / (k + 1) * p / (1 - p)
            k += 1
            cdf += pmf
        return k


def sampler(n: int, p: float, sd: float = 0.0) -> Binomial | BetaBinomial:
    return BetaBinomial(n, p, sd) if sd else Binomial(n, p)


def false_alarms(seed: int, per_hour: int, weeks: int, rate: float = 0.10,
                 settings: DriftSettings = DEFAULTS, sd: float = 0.0) -> int:
    """How many alerts one stream at a constant `rate` (hourly spread `sd`) opens in `weeks` weeks of hourly looks
    from an empty state."""
    rng, draw = random.Random(seed), sampler(per_hour, rate, sd).draw
    stream, opened = StreamState(), 0
    for h in range(weeks * WEEK):
        alert = step(stream, "sim", "feedback_down", h * HOUR, per_hour, draw(rng), settings)
        opened += alert is not None and alert.state == "open"
    return opened


def detection_delay(seed: int, per_hour: int, before: float = 0.10, after: float = 0.13,
                    settings: DriftSettings = DEFAULTS, max_hours: int = 2000,
                    sd: float = 0.0) -> tuple[int | None, int | None, int]:
    """Impressions from a step `before` → `after` until the detector alerts, and until an oracle CUSUM (both rates
    known, same threshold) does; None if not within `max_hours`. Also how many alerts opened before the step."""
    rng = random.Random(seed)
    draws = {p: sampler(per_hour, p, sd).draw for p in (before, after)}
    change = settings.reference_days * 24 + settings.gap_hours + 48
    stream, early = StreamState(), 0
    oracle, oracle_delay, delay = 0.0, None, None
    for h in range(change + max_hours):
        count = draws[before if h < change else after](rng)
        alert = step(stream, "sim", "feedback_down", h * HOUR, per_hour, count, settings)
        if h < change:
            early += alert is not None and alert.state == "open"
            continue
        if delay is None and alert is not None and alert.state == "open":
            delay = (h - change + 1) * per_hour
        if oracle_delay is None:
            oracle = max(0.0, oracle + log_likelihood_ratio(per_hour, count, after, before))
            if oracle >= settings.threshold:
                oracle_delay = (h - change + 1) * per_hour
        if delay is not None and oracle_delay is not None:
            break
    return delay, oracle_delay, early


def poisson_interval(k: int, exposure: float, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval for a Poisson rate seen as `k` events in `exposure` units."""
    tail = (1 - level) / 2

    def cdf(n: int, mean: float) -> float:  # P(X <= n)
        term = total = math.exp(-mean)
        for i in range(1, n + 1):
            term *= mean / i
            total += term
        return total

    def solve(f, lo: float = 0.0, hi: float = 1000.0 + 10 * k) -> float:
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
        return (lo + hi) / 2

    if k >= 100:  # exp(-mean) underflows; Wilson–Hilferty's chi-square quantiles are within 0.1% here
        z = 1.959964
        lower = k * (1 - 1 / (9 * k) - z / (3 * math.sqrt(k))) ** 3
        upper = (k + 1) * (1 - 1 / (9 * (k + 1)) + z / (3 * math.sqrt(k + 1))) ** 3
    else:
        lower = 0.0 if k == 0 else solve(lambda m: tail - (1 - cdf(k - 1, m)))
        upper = solve(lambda m: cdf(k, m) - tail)
    return lower / exposure, upper / exposure


def median_or_none(values: list[int | None]) -> float | None:
    """Median with a missed detection counted as infinitely late."""
    ordered = sorted(values, key=lambda v: math.inf if v is None else v)
    middle = ordered[(len(ordered) - 1) // 2: len(ordered) // 2 + 1]
    return None if None in middle else statistics.fmean(middle)


def quartiles(values: list[int | None]) -> tuple[float, float]:
    known = sorted(math.inf if v is None else v for v in values)
    return known[len(known) // 4], known[(3 * len(known)) // 4]


def run(per_hour: int, streams: int, stream_weeks: int, seeds: int, first_seed: int,
        settings: DriftSettings = DEFAULTS, sd: float = 0.0) -> dict:
    alarms = sum(false_alarms(first_seed + i, per_hour, stream_weeks, settings=settings, sd=sd)
                 for i in range(streams))
    weeks = streams * stream_weeks
    results = [detection_delay(first_seed + 500_000 + i, per_hour, settings=settings, sd=sd) for i in range(seeds)]
    delays = [r[0] for r in results]
    oracle = [r[1] for r in results]
    low, high = poisson_interval(alarms, weeks / 100)
    return {"per_hour": per_hour, "weeks": weeks, "alarms": alarms, "per_100_weeks": 100 * alarms / weeks,
            "per_100_weeks_ci": (low, high), "median_delay": median_or_none(delays),
            "delay_quartiles": quartiles(delays), "oracle_median": median_or_none(oracle),
            "early_alarms": sum(r[2] for r in results), "missed": sum(d is None for d in delays)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-hour", default="100,1000", help="impressions per hour, comma list")
    parser.add_argument("--streams", type=int, default=200, help="false-alarm streams per traffic level")
    parser.add_argument("--stream-weeks", type=int, default=10, help="weeks each false-alarm stream is watched")
    parser.add_argument("--seeds", type=int, default=20, help="detection seeds per traffic level")
    parser.add_argument("--calibration", action="store_true", help="use the calibration seeds, not the held-out ones")
    parser.add_argument("--sd", type=float, default=0.0,
                        help="hour-to-hour standard deviation of the true rate (overdispersion); 0: binomial hours")
    parser.add_argument("--no-overdispersion", action="store_true",
                        help="run the detector without its overdispersion correction, to compare")
    args = parser.parse_args(argv)
    first_seed = 0 if args.calibration else HELD_OUT
    settings = msgspec.structs.replace(DEFAULTS, overdispersion=not args.no_overdispersion)
    print(f"machine: {os.cpu_count()} CPUs, {_cpu_model()}, Python {platform.python_version()}; "
          f"seeds from {first_seed}; hourly rate sd {args.sd}; settings {settings}")
    print("| impressions/hour | weeks watched | false alarms | per 100 weeks (95% CI) | median impressions to alert "
          "(quartiles) | oracle CUSUM median | seconds |")
    print("|---|---|---|---|---|---|---|")
    for per_hour in (int(x) for x in args.per_hour.split(",")):
        started = time.perf_counter()
        r = run(per_hour, args.streams, args.stream_weeks, args.seeds, first_seed, settings, args.sd)
        low, high = r["per_100_weeks_ci"]
        q1, q3 = r["delay_quartiles"]
        print(f"| {per_hour:,} | {r['weeks']:,} | {r['alarms']} | {r['per_100_weeks']:.3f} ({low:.3f}–{high:.3f}) | "
              f"{r['median_delay']:,.0f} ({q1:,.0f}–{q3:,.0f}) | {r['oracle_median']:,.0f} | "
              f"{time.perf_counter() - started:.0f} |", flush=True)
        if r["early_alarms"] or r["missed"]:
            print(f"  ({r['early_alarms']} alerts before the step, {r['missed']} steps missed)")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    raise SystemExit(main())
