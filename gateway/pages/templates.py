"""The pages' Jinja environment: HTML-autoescaped, templates from `pages/templates/`.

`base.html` is the frame every page extends (theme, header, sign-out); `sign_in.html` is the key form; both take the
page's name and paths as variables so the reviewer page reuses them as they are.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2

from gateway.pages.static import static_url


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("gateway.pages", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["static"] = static_url
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
