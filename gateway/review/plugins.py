"""Objects a deployment plugs in by name: a dotted path, or an entry point's name in a group."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points


class PluginError(LookupError):
    """A plug-in named in a setting could not be found or loaded."""


def resolve(spec: str, group: str) -> object:
    """The object `spec` names; a class is instantiated with no arguments.

    `spec` is a dotted path (`package.module:attr`, or `package.module.attr`), or, when it has neither `:` nor `.`,
    the name of an entry point in `group`.
    """
    spec = spec.strip()
    if not spec:
        raise PluginError("no plug-in named")
    target = _import(spec) if (":" in spec or "." in spec) else _entry_point(group, spec)
    return target() if isinstance(target, type) else target


def _import(path: str) -> object:
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        target: object = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise PluginError(f"cannot load {path!r}: {exc}") from exc
    return target


def _entry_point(group: str, name: str) -> object:
    found = entry_points(group=group, name=name)
    if not found:
        raise PluginError(f"no entry point {name!r} in group {group!r}")
    try:
        return next(iter(found)).load()
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"cannot load entry point {name!r} in group {group!r}: {exc}") from exc
