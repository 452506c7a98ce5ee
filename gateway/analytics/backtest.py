"""`backchannel drift backtest --input FILE.csv`: replay hourly counts through the detector the gateway runs.

Input: CSV with the header `hour,key,signal,shown,count`. `hour` is the start of an hour as unix seconds or ISO 8601
(without an offset it is UTC), `key` any group label, `signal` a signal name, `shown` that hour's impressions and
`count` how many had the signal. Rows may come in any order; each (hour, key, signal) at most once.
Output: one JSON line per alert the detector would have opened, in hour order:
`{"key", "signal", "detected_at" (ISO 8601 hour), "baseline_rate", "recent_rate"}`.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from gateway.analytics import drift
from gateway.analytics.rates import SIGNALS

HEADER = ("hour", "key", "signal", "shown", "count")


class BacktestInputError(ValueError):
    """A bad input file; the message names the line."""


def parse_hour(text: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        seconds = int(text)
    else:
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"hour {text!r} is neither unix seconds nor ISO 8601") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        seconds = int(when.timestamp())
    if seconds % drift.HOUR:
        raise ValueError(f"hour {text!r} is not the start of an hour")
    return seconds


def _count(row: dict[str, str], field: str) -> int:
    text = row[field].strip()
    if not text.isdigit():
        raise ValueError(f"{field} {row[field]!r} is not a whole number >= 0")
    return int(text)


def parse_csv(lines: Iterable[str], name: str = "input") -> list[drift.HourCount]:
    """The hourly counts in a backtest CSV; `BacktestInputError` naming the line for anything malformed."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != HEADER:
        raise BacktestInputError(f"{name} line 1: the header must be {','.join(HEADER)}, got {header!r}")
    counts, seen = [], {}
    for values in reader:
        line = reader.line_num
        if not values:
            continue
        try:
            if len(values) != len(HEADER):
                raise ValueError(f"expected {len(HEADER)} fields, got {len(values)}")
            row = dict(zip(HEADER, values))
            hour, key, signal = parse_hour(row["hour"]), row["key"], row["signal"].strip()
            if signal not in SIGNALS:
                raise ValueError(f"unknown signal {signal!r} (one of: {', '.join(SIGNALS)})")
            shown, count = _count(row, "shown"), _count(row, "count")
            if count > shown:
                raise ValueError(f"count {count} is more than shown {shown}")
            if (hour, key, signal) in seen:
                first = seen[hour, key, signal]
                raise ValueError(f"a second row for this hour, key and signal (first on line {first})")
        except ValueError as exc:
            raise BacktestInputError(f"{name} line {line}: {exc}") from None
        seen[hour, key, signal] = line
        counts.append(drift.HourCount(hour=hour, key=key, signal=signal, shown=shown, count=count))
    return counts


def backtest(counts: Iterable[drift.HourCount],
             settings: drift.DriftSettings = drift.DEFAULTS) -> Iterator[dict[str, Any]]:
    """The alerts the detector would have opened on these counts, from an empty state, as backtest records."""
    for alert in drift.advance(drift.DriftState(), counts, settings):
        if alert.state == "open":
            yield {"key": alert.key, "signal": alert.signal, "detected_at": drift.iso_hour(alert.detected_at),
                   "baseline_rate": alert.baseline.rate, "recent_rate": alert.recent.rate}


def cmd_backtest(args: argparse.Namespace) -> int:
    try:
        with open(args.input, newline="", encoding="utf-8") as file:
            counts = parse_csv(file, args.input)
    except (OSError, UnicodeDecodeError, BacktestInputError) as exc:
        print(f"backchannel drift backtest: {exc}", file=sys.stderr)
        return 2
    for record in backtest(counts):
        print(json.dumps(record))
    return 0


def add_drift_parser(subparsers: Any) -> None:
    """Add `drift backtest` to the `backchannel` command's subparsers."""
    drift_parser = subparsers.add_parser("drift", help="drift alerts")
    commands = drift_parser.add_subparsers(dest="drift_command", required=True)
    run = commands.add_parser("backtest", help="replay hourly counts (CSV) through the detector; print its alerts",
                              description=__doc__.split("\n\n", 1)[1])
    run.add_argument("--input", required=True, metavar="FILE.csv", help="CSV with header hour,key,signal,shown,count")
    run.set_defaults(func=cmd_backtest)
