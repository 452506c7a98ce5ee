"""Every setting is documented in the README, and settings parse as documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.app import Rates
from gateway.settings import SETTINGS, Settings

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_setting_is_in_the_readme_table(setting):
    rows = [line for line in README.read_text().splitlines() if line.startswith("|")]
    assert any(re.search(rf"`{setting.env}`", row) for row in rows), f"{setting.env} is not in the README's table"


def test_environment_then_overrides():
    settings = Settings.load({"BACKCHANNEL_PORT": "9001", "BACKCHANNEL_TRUST_FORWARDED_FOR": "yes",
                              "BACKCHANNEL_DB": "from-env.db"}, db="from-cli.db")
    assert settings.port == 9001 and settings.trust_forwarded_for is True and settings.db == "from-cli.db"


@pytest.mark.parametrize("env", [{"BACKCHANNEL_PORT": "eighty"}, {"BACKCHANNEL_TRUST_FORWARDED_FOR": "maybe"}])
def test_bad_values_name_the_variable(env):
    with pytest.raises(ValueError, match=next(iter(env))):
        Settings.load(env)


def test_a_limit_burst_below_one_full_request_is_refused_at_start():
    with pytest.raises(ValueError, match="BACKCHANNEL_LIMIT_SESSION needs a burst"):
        Rates.from_settings(Settings.load({"BACKCHANNEL_LIMIT_SESSION": "10/s"}))
