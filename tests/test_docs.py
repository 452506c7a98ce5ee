"""The README matches the code: its settings table is the settings' declaration, its layout table the tree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.settings import SETTINGS, settings_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_settings_table_is_the_declaration():
    assert settings_table() in section("Settings"), "regenerate it: python -c 'from gateway.settings import " \
                                                    "settings_table; print(settings_table())'"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_setting_is_in_the_readme_with_its_default(setting):
    rows = [row for row in section("Settings").splitlines() if row.startswith(f"| `{setting.env}` |")]
    assert len(rows) == 1, f"{setting.env} is not in the README's settings table"
    assert rows[0].split(" | ")[1] == setting.shown_default()


def layout_paths() -> list[str]:
    rows = [row for row in section("Layout").splitlines() if row.startswith("| `")]
    return [path for row in rows for path in re.findall(r"`([^`]+)`", row.split(" | ")[0])]


def test_the_layout_table_lists_real_paths():
    paths = layout_paths()
    assert paths and [path for path in paths if not (ROOT / path).exists()] == []


def test_the_layout_table_lists_every_module_of_the_gateway():
    listed = set(layout_paths())
    modules = [f"gateway/{entry.name}" + ("/" if entry.is_dir() else "") for entry in (ROOT / "gateway").iterdir()
               if not entry.name.startswith(("_", ".")) and (entry.suffix == ".py" or (entry / "__init__.py").exists())]
    assert sorted(m for m in modules if m not in listed) == []
