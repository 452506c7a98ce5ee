"""Before and after in one run: a gateway per side, each from its own tree, measured in alternating rounds.

    .venv/bin/python bench/compare.py before=../baseline after=. [--rounds 10] [--duration 10]
    .venv/bin/python bench/compare.py none=. dest=.+destination

Two runs of `bench/run.py` minutes apart mix the change with the host's drift (on the shared benchmark machine, a fifth
within the hour). Here every side's gateway (and, with `+destination`, its PostHog-style sink, as `--destination`
starts it) runs from the start, and each round measures the bare app (`bare-1`), then every side's `gateway-1`,
then every side's `gateway-20`, the sides' order reversed every other round, each run starting once every destination's
queue is empty. So a side's ratio to the first side compares runs seconds apart. Reported per side: its median round,
and the median over rounds of its per-round ratio to the first side, with a bootstrap 90% interval of that median. Each
side's store is checked as `bench/run.py` checks it (stored events = events the gateway answered accepted).

A side is `NAME=PATH[+destination]`, PATH a tree with this layout (its own `gateway` package; its `bench/bare_app.py` is
not used: the bare app is this tree's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from run import BENCH, Servers, caught_up, check_durability, log_traces, machine, run_wrk, scenario

METRICS = {  # what is compared, from a round: (scenario, the value)
    "1-event ratio": ("gateway-1", lambda rounds, r: rounds["gateway-1"][r]["rps"] / rounds["bare-1"][r]["rps"]),
    "1-event req/s": ("gateway-1", lambda rounds, r: rounds["gateway-1"][r]["rps"]),
    "20-event events/s": ("gateway-20", lambda rounds, r: rounds["gateway-20"][r]["events_per_s"]),
}


@dataclass
class Side:
    name: str
    root: Path
    destination: bool
    servers: Servers | None = None
    tokens: Path | None = None
    rounds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Side:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise argparse.ArgumentTypeError(f"a side is NAME=PATH[+destination], not {text!r}")
        path, plus, option = path.partition("+")
        if plus and option != "destination":
            raise argparse.ArgumentTypeError(f"unknown option {option!r} in {text!r}")
        root = Path(path).resolve()
        if not (root / "gateway").is_dir():
            raise argparse.ArgumentTypeError(f"{root} has no gateway package")
        return cls(name, root, bool(plus))


def bootstrap_median(values: list[float], rng: random.Random, draws: int = 4000) -> tuple[float, float]:
    """A 90% bootstrap interval of the median of `values`."""
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return medians[int(0.05 * draws)], medians[int(0.95 * draws) - 1]


def compare(sides: list[Side], rounds: int, rng: random.Random) -> dict[str, Any]:
    """Per side, each metric's median round; per side after the first, its per-round ratios to the first side."""
    out: dict[str, Any] = {}
    first = sides[0]
    for side in sides:
        row: dict[str, Any] = {}
        for metric, (_, value) in METRICS.items():
            values = [value(side.rounds, r) for r in range(rounds)]
            row[metric] = {"median": statistics.median(values), "rounds": values}
            if side is not first:
                ratios = [value(side.rounds, r) / value(first.rounds, r) for r in range(rounds)]
                low, high = bootstrap_median(ratios, rng)
                row[metric] |= {"ratio_median": statistics.median(ratios), "ratio_interval": [low, high],
                                "ratios": ratios}
        out[side.name] = row
    return out


def report(sides: list[Side], compared: dict[str, Any], rounds: int) -> str:
    first = sides[0].name
    lines = [f"medians of {rounds} rounds; in brackets: the median of the per-round ratios to {first!r}, "
             "and its bootstrap 90% interval", f"{'side':<12}" + "".join(f"{m:>34}" for m in METRICS)]
    for side in sides:
        cells = []
        for metric in METRICS:
            cell = compared[side.name][metric]
            text = f"{cell['median']:,.3f}" if metric.endswith("ratio") else f"{cell['median']:,.0f}"
            if "ratio_median" in cell:
                low, high = cell["ratio_interval"]
                text += f" ({cell['ratio_median'] - 1:+.1%} [{low - 1:+.1%}, {high - 1:+.1%}])"
            cells.append(f"{text:>34}")
        lines.append(f"{side.name:<12}" + "".join(cells))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sides", nargs="+", type=Side.parse, help="NAME=PATH[+destination]; the first is the reference")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario and round")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per scenario before round one")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--traces", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0, help="for the bootstrap")
    parser.add_argument("--json", type=Path, default=BENCH / "compare.json")
    args = parser.parse_args()
    if len(args.sides) < 2 or len({s.name for s in args.sides}) != len(args.sides):
        parser.error("name two or more sides, each once")

    with tempfile.TemporaryDirectory(prefix="backchannel-compare-") as tmp:
        try:
            return _run(args, Path(tmp))
        finally:
            for side in args.sides:
                if side.servers is not None:
                    side.servers.close()


def _run(args: argparse.Namespace, tmp: Path) -> int:
    started = time.time()
    sides: list[Side] = args.sides
    for side in sides:
        workdir = tmp / side.name
        workdir.mkdir()
        side.servers = Servers(workdir, pin=False, destination=side.destination, root=side.root)
        side.servers.start()
        side.tokens = workdir / "tokens.txt"
        asyncio.run(log_traces(side.servers.gateway_port, side.servers.secret_key, args.traces, args.sessions,
                               side.tokens, side.servers.public_key))
    bare = sides[0].servers
    assert bare is not None
    bare_rounds: list[dict[str, Any]] = []
    warmups: dict[str, list[dict[str, Any]]] = {side.name: [] for side in sides}
    print(f"{len(sides)} sides, {args.rounds} rounds of {args.duration:g} s per scenario", file=sys.stderr)

    def settled() -> None:  # every destination's queue emptied, so no side's delivery runs behind another's round
        for side in sides:
            assert side.servers is not None
            caught_up(side.servers)

    for round_no in range(args.rounds):
        order = sides if round_no % 2 == 0 else sides[::-1]
        if round_no == 0 and args.warmup > 0:
            run_wrk(bare, bare.bare_port, sides[0].tokens, 1, "204", args.warmup, args)
        settled()
        bare_rounds.append(scenario(bare, "bare-1", bare.bare.pid, lambda: run_wrk(
            bare, bare.bare_port, sides[0].tokens, 1, "204", args.duration, args)))
        for name, events in (("gateway-1", 1), ("gateway-20", 20)):
            for side in order:
                servers, tokens = side.servers, side.tokens
                assert servers is not None and tokens is not None
                if round_no == 0 and args.warmup > 0:
                    warmups[side.name].append(run_wrk(servers, servers.gateway_port, tokens, events, "accepted",
                                                      args.warmup, args))
                settled()
                side.rounds.setdefault(name, []).append(scenario(servers, f"{side.name} {name}", servers.gateway.pid,
                                                                 lambda: run_wrk(servers, servers.gateway_port, tokens,
                                                                                 events, "accepted", args.duration,
                                                                                 args)))
    for side in sides:
        side.rounds["bare-1"] = bare_rounds
    compared = compare(sides, args.rounds, random.Random(args.seed))
    durability = {}
    for side in sides:
        assert side.servers is not None
        runs = [*warmups[side.name], *side.rounds["gateway-1"], *side.rounds["gateway-20"]]
        durability[side.name] = check_durability(side.servers, runs)
    results = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "sides"},
        "sides": {s.name: {"root": str(s.root), "destination": s.destination} for s in sides},
        "machine": machine(tmp), "compared": compared,
        "rounds": {s.name: {k: v for k, v in s.rounds.items() if k != "bare-1"} for s in sides},
        "bare_rounds": bare_rounds, "durability": durability,
    }
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(report(sides, compared, args.rounds))
    for name, check in durability.items():
        print(f"{'OK  ' if check['ok'] else 'FAIL'}  {name}: stored events {check['stored']:,} = gateway answered "
              f"accepted {check['server_accepted']:,}; {check['client_bad_requests']} bad answers")
    print(f"\nwrote {args.json}", file=sys.stderr)
    return 0 if all(check["ok"] for check in durability.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
