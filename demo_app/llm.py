"""A deterministic fake LLM with two variants, so the demo's feedback data tells a story.

`model-a` writes complete, on-topic answers. `model-b` is the cheaper variant under test: shorter,
and about a third of the time it drifts off-topic. The same (template, model, prompt, attempt)
always gives the same text; a regeneration (attempt + 1) gives a different one.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence

TEMPLATES = ("answer", "summarize", "draft")
MODELS = ("model-a", "model-b")
TEMPLATE_VERSION = "1"
OFF_TOPIC_RATE = 0.35  # share of model-b answers that ignore the prompt

_STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her
    here hers him his how i if in into is it its itself just let me more most my no nor not now of off on once
    only or other our out over own please same she should so some such than that the their them then there
    these they this those through to too under until up very was we were what when where which while who whom
    why will with would you your yours write tell give explain summarize summarise draft reply email help need
    want know make get use using find start learn improve fix create build set reset choose pick keep think
    like way best good better new small big simple quick easy really thing things""".split()
)

_ANSWER_OPENERS = (
    "Good question about {a}.",
    "Here is how I would think about {a}.",
    "Let's break {a} down step by step.",
)
_ANSWER_BODY = (
    "Start by pinning down what {a} means in your situation, because that decides everything after it.",
    "The most common mistake is treating {a} in isolation from {b}.",
    "A practical first step is to write down what you already know about {b} and check it against one trusted source.",
    "If {a} is time-sensitive, handle the part that is hardest to undo first.",
    "In most cases the simplest option that still handles {b} well is the right one.",
    "Watch the edge cases: {a} tends to behave differently at the extremes.",
    "Once the basics work, come back to {b} and tighten the details.",
    "It helps to test your assumptions about {b} on a small example before committing.",
)
_ANSWER_CLOSERS = (
    "Want me to go deeper on {a} or on {b}?",
    "Happy to walk through a concrete example of {a} if that helps.",
    "Tell me more about your constraints around {b} and I can be more specific.",
)
_WEAK_ANSWERS = (
    "{A} is a broad topic.",
    "It depends on {a}.",
    "There are many views on {a}; it varies.",
    "Probably, but {b} matters too.",
)
_OFF_TOPIC = (
    "Interestingly, octopuses have three hearts and blue blood.",
    "The Great Wall of China is not visible from orbit with the naked eye.",
    "Many people find that a short stroll after lunch improves focus.",
    "Honey found in ancient Egyptian tombs was still edible.",
    "Bananas are berries, but strawberries are not.",
)
_SUMMARY_HEADINGS = ("Here is a summary:", "The key points:", "In brief:")
_SUMMARY_BOTTOM_LINES = (
    "Bottom line: {a} is the part that matters most.",
    "Takeaway: keep an eye on {a} and {b}.",
    "Overall, the story is about {a}.",
)
_DRAFT_OPENERS = (
    "Thanks for reaching out about {a}.",
    "Thank you for your note regarding {a}.",
    "I appreciate you raising {a} with me.",
)
_DRAFT_BODY = (
    "I have looked into {b} and I think we can find a good way forward.",
    "Before we decide on {b}, I would like to confirm a couple of details with you.",
    "I can share an update on {b} by the end of the week.",
    "Could we schedule a short call to go over {b} together?",
)
_DRAFT_CLOSERS = (
    "Let me know what works best for you.",
    "Looking forward to hearing your thoughts.",
    "Please reach out if anything is unclear.",
)


def assign_model(session_id: str) -> str:
    """The A/B variant for a session: stable for that session, an even split across sessions."""
    digest = hashlib.sha256(session_id.encode()).digest()
    return MODELS[digest[0] % len(MODELS)]


def topic_words(prompt: str) -> list[str]:
    """The prompt's content words, in order, without duplicates; an answer is on-topic if it uses one."""
    words = re.findall(r"[a-z][a-z'-]+", prompt.lower())
    return list(dict.fromkeys(w for w in words if len(w) > 2 and w not in _STOPWORDS))


def generate(template: str, model: str, prompt: str, attempt: int = 1) -> str:
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}")
    seed = hashlib.sha256(f"{template}\0{model}\0{attempt}\0{prompt}".encode()).digest()
    # Only Random.random() is guaranteed to give the same sequence on every Python version.
    rng = random.Random(int.from_bytes(seed[:8], "big"))
    words = topic_words(prompt)
    a = words[0] if words else "your question"
    b = " ".join(words[1:3]) if len(words) > 1 else "the details"
    topic = {"a": a, "b": b, "A": a[:1].upper() + a[1:]}

    if model == "model-b":
        return _weak(template, rng, topic)
    if template == "answer":
        body = _pick_many(rng, _ANSWER_BODY, 4 + _below(rng, 2))
        return " ".join(s.format(**topic) for s in (_pick(rng, _ANSWER_OPENERS), *body, _pick(rng, _ANSWER_CLOSERS)))
    if template == "summarize":
        bullets = _summary_points(prompt, topic)
        heading = _pick(rng, _SUMMARY_HEADINGS)
        bottom_line = _pick(rng, _SUMMARY_BOTTOM_LINES).format(**topic)
        return heading + "\n\n" + "\n".join(f"• {b}" for b in bullets) + "\n\n" + bottom_line
    body = " ".join(s.format(**topic) for s in _pick_many(rng, _DRAFT_BODY, 2))
    opener = _pick(rng, _DRAFT_OPENERS).format(**topic)
    closer = _pick(rng, _DRAFT_CLOSERS)
    return f"Hi there,\n\n{opener} {body}\n\n{closer}\n\nBest regards,\nAlex"


def chunks(text: str) -> list[str]:
    """Split `text` into streaming chunks of one to three words; joined, they give back `text` exactly."""
    pieces = re.split(r"(?<=\s)(?=\S)", text)
    sizes = (2, 1, 3, 2, 1, 2)
    out: list[str] = []
    i = 0
    while i < len(pieces):
        size = sizes[len(out) % len(sizes)]
        out.append("".join(pieces[i : i + size]))
        i += size
    return out


def _weak(template: str, rng: random.Random, topic: dict[str, str]) -> str:
    if rng.random() < OFF_TOPIC_RATE:
        text = _pick(rng, _OFF_TOPIC)
    else:
        text = " ".join(s.format(**topic) for s in _pick_many(rng, _WEAK_ANSWERS, 1 + _below(rng, 2)))
    if template == "summarize":
        return f"In short: {text}"
    if template == "draft":
        return f"Hi,\n\n{text}\n\nThanks"
    return text


def _summary_points(prompt: str, topic: dict[str, str]) -> list[str]:
    text = re.sub(r"^\s*summari[sz]e( this)?\s*:?\s*", "", prompt, flags=re.IGNORECASE)
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
    points = []
    for sentence in sentences[:3]:
        words = sentence.split()
        points.append(" ".join(words[:12]).rstrip(".!?,;:") + ("…" if len(words) > 12 else "."))
    fillers = (f"The main subject is {topic['a']}.", f"It also touches on {topic['b']}.",
               f"An open question is how {topic['a']} and {topic['b']} fit together.")
    return points + list(fillers[: 3 - len(points)])


def _below(rng: random.Random, n: int) -> int:
    return int(rng.random() * n)


def _pick(rng: random.Random, options: Sequence[str]) -> str:
    return options[_below(rng, len(options))]


def _pick_many(rng: random.Random, options: Sequence[str], k: int) -> list[str]:
    pool = list(options)
    return [pool.pop(_below(rng, len(pool))) for _ in range(min(k, len(pool)))]
