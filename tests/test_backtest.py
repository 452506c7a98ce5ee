"""`drift backtest`: CSV in, exactly the detector's alerts out, and bad files named by line."""

from __future__ import annotations

import argparse
import json

import pytest

from gateway.analytics import drift
from gateway.analytics.backtest import BacktestInputError, add_drift_parser, backtest, parse_csv, parse_hour

START = 1_764_547_200  # 2025-12-01T00:00:00Z


def history_csv() -> str:
    lines = ["hour,key,signal,shown,count"]
    for h in range(760):
        when = f"{START + h * 3600}" if h % 2 else drift.iso_hour(START + h * 3600)  # both hour forms
        lines.append(f"{when},model-b,feedback_down,100,{10 if h < 720 else 25}")
        lines.append(f"{when},model-a,feedback_down,100,10")
    return "\n".join(reversed(lines[1:])).join([lines[0] + "\n", "\n"])  # rows in any order


def run_cli(path) -> int:
    parser = argparse.ArgumentParser(prog="backchannel")
    add_drift_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["drift", "backtest", "--input", str(path)])
    return args.func(args)


def test_prints_the_alerts_the_detector_opens(tmp_path, capsys):
    path = tmp_path / "history.csv"
    path.write_text(history_csv())
    assert run_cli(path) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    counts = parse_csv(path.read_text().splitlines())
    expected = [a for a in drift.advance(drift.DriftState(), counts) if a.state == "open"]
    assert len(lines) == len(expected) == 1
    assert lines[0]["key"] == "model-b" and lines[0]["signal"] == "feedback_down"
    assert lines[0]["detected_at"] == drift.iso_hour(expected[0].detected_at)
    assert lines[0]["baseline_rate"] == pytest.approx(0.10) and lines[0]["recent_rate"] == expected[0].recent.rate
    assert drift.iso_hour(START + 720 * 3600) <= lines[0]["detected_at"] < drift.iso_hour(START + 740 * 3600)
    assert list(backtest(counts)) == lines


@pytest.mark.parametrize("text, message", [
    ("", "line 1: the header must be"),
    ("hour,key,signal,shown\n", "line 1: the header must be"),
    ("hour,key,signal,shown,count\n1764547200,k,feedback_down,100\n", "line 2: expected 5 fields"),
    ("hour,key,signal,shown,count\nyesterday,k,feedback_down,100,10\n", "line 2: hour 'yesterday' is neither"),
    ("hour,key,signal,shown,count\n1764547201,k,feedback_down,100,10\n", "line 2: hour '1764547201' is not the start"),
    ("hour,key,signal,shown,count\n2025-12-01T00:30:00Z,k,copied,1,1\n", "line 2: hour .* is not the start"),
    ("hour,key,signal,shown,count\n1764547200,k,thumbs,100,10\n", "line 2: unknown signal 'thumbs'"),
    ("hour,key,signal,shown,count\n1764547200,k,copied,-1,0\n", "line 2: shown '-1' is not a whole number"),
    ("hour,key,signal,shown,count\n1764547200,k,copied,10,1.5\n", "line 2: count '1.5' is not a whole number"),
    ("hour,key,signal,shown,count\n1764547200,k,copied,10,11\n", "line 2: count 11 is more than shown 10"),
    ("hour,key,signal,shown,count\n1764547200,k,copied,10,1\n\n2025-12-01T00:00:00+00:00,k,copied,10,2\n",
     "line 4: a second row .*first on line 2"),
])
def test_bad_input_names_the_line(tmp_path, capsys, text, message):
    with pytest.raises(BacktestInputError, match=message):
        parse_csv(text.splitlines(keepends=True), "in.csv")
    path = tmp_path / "in.csv"
    path.write_text(text)
    assert run_cli(path) == 2
    err = capsys.readouterr().err
    assert err.startswith("backchannel drift backtest: ") and "Traceback" not in err


def test_a_missing_file_is_an_error_not_a_traceback(tmp_path, capsys):
    assert run_cli(tmp_path / "nope.csv") == 2
    assert "nope.csv" in capsys.readouterr().err


def test_hours_without_an_offset_are_utc():
    assert parse_hour("2025-12-01T00:00:00") == parse_hour("2025-12-01T01:00:00+01:00") == START
