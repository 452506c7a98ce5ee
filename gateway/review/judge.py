"""The judge hook: a callable that pre-labels a queue item before a reviewer sees it.

A judge takes the trace as `GET /v1/traces/{id}` answers it (a dict: `input`, `output`, `model`, `template`,
`events`, `rating`, `signals`, ...) and returns `{"labels": [...], "confidence": 0.0-1.0}`, or None when it has no
opinion. Reviewers see it as a suggestion; exports keep it apart from human labels (`judge_labels`).

A deployment names its judge in the `BACKCHANNEL_JUDGE` setting: a dotted path (`package.module:judge`; a class is
instantiated with no arguments) or the name of an entry point in the `backchannel.judges` group, e.g. in a plug-in's
pyproject.toml:

    [project.entry-points."backchannel.judges"]
    links = "gateway.review.judge:hallucinated_link"
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any, Protocol, TypedDict

from gateway.review.plugins import resolve

ENTRY_POINT_GROUP = "backchannel.judges"


class Suggestion(TypedDict):
    labels: list[str]
    confidence: float


class Judge(Protocol):
    def __call__(self, trace: Mapping[str, Any], /) -> Suggestion | None: ...


def load_judge(spec: str) -> Judge | None:
    """The judge `spec` names, or None for an empty spec; `plugins.PluginError` when it cannot be found."""
    if not spec.strip():
        return None
    judge = resolve(spec, ENTRY_POINT_GROUP)
    if not callable(judge):
        raise TypeError(f"judge {spec!r} is not callable")
    return judge  # type: ignore[return-value]


def checked(result: object, taxonomy: Collection[str]) -> Suggestion | None:
    """A judge's answer as a `Suggestion`, or None when it is not one: labels must be strings of the project's
    taxonomy (others are dropped) and confidence a number from 0 to 1. A judge is plug-in code: the caller runs it,
    catches what it raises, and passes what it returned through here before storing it."""
    if not isinstance(result, Mapping):
        return None
    labels, confidence = result.get("labels"), result.get("confidence")
    if not isinstance(labels, list) or isinstance(confidence, bool) or not isinstance(confidence, int | float):
        return None
    if not 0.0 <= confidence <= 1.0:
        return None
    known = [label for label in dict.fromkeys(labels) if isinstance(label, str) and label in taxonomy]
    return Suggestion(labels=known, confidence=float(confidence))


# --- The example judge ---

# A URL as a model writes one: a scheme, then anything up to whitespace, quotes or brackets.
_URL = re.compile(r"""https?://[^\s<>"'`()\[\]{}]+""", re.IGNORECASE)
_TRAILING = ".,;:!?*_"  # sentence punctuation and Markdown emphasis after a URL are not part of it
LINK_CONFIDENCE = 0.6


def urls(text: str) -> set[str]:
    """The URLs in `text`, normalised for comparison: scheme and host lower-cased, trailing punctuation and `/` off."""
    found = set()
    for match in _URL.findall(text):
        url = match.rstrip(_TRAILING).rstrip("/")
        scheme, _, rest = url.partition("://")
        host, slash, path = rest.partition("/")
        found.add(f"{scheme.lower()}://{host.lower()}{slash}{path}")
    return found


def hallucinated_link(trace: Mapping[str, Any]) -> Suggestion | None:
    """Suggests `hallucinated_link` when the output has a URL that appears nowhere in the input.

    A URL the user or the context supplied is quoted; one the model produced on its own may be invented. It may also
    be real, hence a middling confidence (`LINK_CONFIDENCE`); no opinion (None) when the output has no new URL.
    """
    output = trace.get("output")
    if not isinstance(output, str):
        return None
    input = trace.get("input")
    if isinstance(input, list):
        input = "\n".join(str(m.get("content", "")) for m in input if isinstance(m, Mapping))
    if urls(output) - urls(input if isinstance(input, str) else ""):
        return Suggestion(labels=["hallucinated_link"], confidence=LINK_CONFIDENCE)
    return None
