"""Settings parse as documented: defaults, then the environment, then command-line options. (The README's table is
checked in tests/test_docs.py.)"""

from __future__ import annotations

import argparse

import pytest

from gateway.core import Rates
from gateway.settings import SETTINGS, Settings, add_options, from_options


def test_environment_then_overrides():
    settings = Settings.load({"BACKCHANNEL_PORT": "9001", "BACKCHANNEL_FORWARDED_ALLOW_IPS": "10.0.0.0/8",
                              "BACKCHANNEL_DB": "from-env.db"}, db="from-cli.db")
    assert settings.port == 9001 and settings.forwarded_allow_ips == "10.0.0.0/8" and settings.db == "from-cli.db"


@pytest.mark.parametrize("env", [{"BACKCHANNEL_PORT": "eighty"}, {"BACKCHANNEL_READ_TIMEOUT": "soon"}])
def test_bad_values_name_the_variable(env):
    with pytest.raises(ValueError, match=next(iter(env))):
        Settings.load(env)


def test_a_limit_burst_below_one_full_request_is_refused_at_start():
    with pytest.raises(ValueError, match="BACKCHANNEL_LIMIT_SESSION needs a burst"):
        Rates.from_settings(Settings.load({"BACKCHANNEL_LIMIT_SESSION": "10/s"}))


def test_every_setting_is_a_serve_option_read_like_its_variable():
    parser = argparse.ArgumentParser()
    add_options(parser)
    args = parser.parse_args(["--max-body-bytes", "131072", "--limit-concurrency", "500", "--db", "cli.db"])
    settings = from_options(args, {"BACKCHANNEL_DB": "env.db", "BACKCHANNEL_PORT": "9002"})
    assert (settings.max_body_bytes, settings.limit_concurrency, settings.db, settings.port) == (131072, 500,
                                                                                                "cli.db", 9002)
    assert {action.dest for action in parser._actions} >= {s.name for s in SETTINGS}
    with pytest.raises(ValueError, match="BACKCHANNEL_MAX_BODY_BYTES must be an integer"):
        from_options(parser.parse_args(["--max-body-bytes", "lots"]), {})


def test_defaults_are_typed_as_declared():
    for setting in SETTINGS:
        assert type(setting.default) is setting.type, setting.name
    assert Settings.load({}) == Settings()


@pytest.mark.parametrize("env, message", [
    ({"BACKCHANNEL_FORWARDED_ALLOW_IPS": "127.0.0.1, proxy.internal"}, "BACKCHANNEL_FORWARDED_ALLOW_IPS"),
    ({"BACKCHANNEL_METRICS_TOKEN": "short"}, "BACKCHANNEL_METRICS_TOKEN"),
])
def test_a_bad_trust_list_or_metrics_token_stops_the_gateway_at_start(tmp_path, env, message):
    from gateway.core import Gateway

    with pytest.raises(ValueError, match=message):
        Gateway(Settings.load({**env, "BACKCHANNEL_DB": str(tmp_path / "bc.db")}))
