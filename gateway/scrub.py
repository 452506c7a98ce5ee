"""Scrub personal data from free-text comments before they are stored.

Matching runs on a folded copy of the comment: NFKC (fullwidth `＠` and digits become ASCII, NBSP a space), every
script's digits as ASCII digits, dash, dot and slash look-alikes as `-`, `.`, `/`, and zero-width, format, combining and
control characters removed. A look-alike or an invisible character therefore cannot split or disguise an address or a
number. Each match is replaced in the original text, which is otherwise kept exactly as written. What is caught and what
is not: README, "What the scrubber catches".
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

EMAIL, CARD, PHONE = "[email]", "[card]", "[phone]"

# "@" (or " @ ") then a dotted domain of letters, digits and hyphens in any script (IDN, Cyrillic look-alikes).
_AT_DOMAIN = re.compile(r"(?: @ |@)([\w-]+(?:\.[\w-]+)+)")
# Walking left from an "@", the local part ends at a space or one of these: everything else before it is taken, so
# an unusual character in the local part (`!`, `/`, a look-alike) never leaves half an address behind.
_LOCAL_STOP = frozenset("()[]{}<>\"'«»“”‘’‹›「」『』,;@\x00")
# Dates and year ranges: kept, and kept out of the number runs around them. Dates need one separator used twice and
# are validated as calendar fields; a longer chain of numbers (`12-11-2024-88`) is not a date.
_DATE = re.compile(
    r"(?<![\w.\-/+])(?:(\d{4})([-/.])(\d{1,2})\2(\d{1,2})|(\d{1,2})([-/.])(\d{1,2})\6(?:\d{4}|\d{2})"
    r"|(1[89]\d\d|20\d\d) ?[-/] ?(1[89]\d\d|20\d\d))(?!\d|[.\-/]\d)")
# A run of digit groups joined by up to three separators (space, dot, dash, slash, parentheses). Not inside a word,
# not after `+`, and not the fraction of a decimal or the minutes of a time (`3.14159265`, `11:30 555`). Possessive, so
# a hostile 1,000-digit comment is scanned in linear time.
_NUMBER = re.compile(r"(?<![\w+])(?<!\d[.,:])\+?\(?\d++(?:[ .\-/()]{0,3}\d++)*+")
_DIGITS = re.compile(r"\d+")
_DIGIT = re.compile(r"\d")
_MIN_DIGITS = 7  # fewer is a count, a year or a price, not a phone number

# Invisible characters outside the dropped categories (Hangul fillers, braille blank, Mongolian vowel separator).
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e")
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me", "Cc"})  # format (zero-width, bidi), combining marks, controls
_DASHES = frozenset("\u2212\u2043\ufe63")  # minus signs and hyphen bullet; category Pd is folded too
_DOTS = frozenset("\u3002\uff61\u00b7\u2022\u2219\u22c5\u30fb\uff65")  # ideographic full stops, middle dots, bullets
_SLASHES = frozenset("\u2044\u2215\u29f8")
_FAST = re.compile(r"[\x20-\x7e\n\r]*")  # printable ASCII folds to itself


@lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    """What one character is for matching: "" if invisible, else its NFKC form with digits and separators in ASCII."""
    if ch in _INVISIBLE or (unicodedata.category(ch) in _DROPPED_CATEGORIES and ch not in "\n\r\t"):
        return ""
    out = []
    for c in unicodedata.normalize("NFKC", ch):
        category = unicodedata.category(c)
        if category == "Nd":
            c = str(unicodedata.decimal(c))
        elif category == "Pd" or c in _DASHES:
            c = "-"
        elif c in _DOTS:
            c = "."
        elif c in _SLASHES:
            c = "/"
        elif c.isspace() and c not in "\n\r":
            c = " "
        elif category in _DROPPED_CATEGORIES or c in _INVISIBLE:
            continue
        out.append(c)
    return "".join(out)


def _fold(text: str) -> tuple[str, list[int] | None]:
    """The folded text and, per folded character, the index of the original character it came from (None: the
    same indices, the text folds to itself)."""
    if _FAST.fullmatch(text):
        return text, None
    parts = list(map(_fold_char, text))
    if all(map(str.__eq__, parts, text)):  # accented letters, CJK, emoji without joiners: nothing to fold
        return text, None
    return "".join(parts), [i for i, part in enumerate(parts) for _ in part]


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _valid_date(match: re.Match[str]) -> bool:
    year, _, a, b, c, _, d, first, last = match.groups()
    if year is not None:
        return 1 <= int(a) <= 12 and 1 <= int(b) <= 31
    if c is not None:  # day/month or month/day
        x, y = int(c), int(d)
        return 1 <= x <= 31 and 1 <= y <= 31 and (x <= 12 or y <= 12)
    return int(first) <= int(last)


def _number_placeholder(run: str) -> str | None:
    """The placeholder for a run of digit groups, or None to keep it."""
    groups = _DIGITS.findall(run)
    digits = "".join(groups)
    if len(digits) < _MIN_DIGITS:
        return None
    if set(_DIGITS.sub("", run)) == {"."} and any(len(group) == 1 for group in groups[1:]):
        return None  # a dotted version or address: 10.0.19045, 192.168.1.1
    if 13 <= len(digits) <= 19 and luhn_ok(digits):
        return CARD
    return PHONE


def _spans(folded: str) -> list[tuple[int, int, str]]:
    """(start, end, placeholder) of everything to scrub, in folded-text positions, in order, not overlapping."""
    spans: list[tuple[int, int, str]] = []
    work = list(folded)  # matched or kept spans are blanked here so later patterns cannot reach into them

    def claim(start: int, end: int) -> None:
        work[start:end] = "\x00" * (end - start)

    if "@" in folded:
        for match in _AT_DOMAIN.finditer(folded):
            domain = match.group(1)
            if not any(ch.isalpha() for ch in domain.rsplit(".", 1)[1]):
                continue  # `answer@3.5`: no top-level domain
            start = match.start()
            while start > 0 and not folded[start - 1].isspace() and folded[start - 1] not in _LOCAL_STOP:
                start -= 1
            if start == match.start():
                continue  # no local part: a handle such as `@john.doe`
            if spans and spans[-1][1] > start:  # `a@b.c@d.e`: one address
                start = spans.pop()[0]
            spans.append((start, match.end(), EMAIL))
            claim(start, match.end())
    if not _DIGIT.search(folded):
        return spans
    blanked = "".join(work)
    for match in _DATE.finditer(blanked):
        if _valid_date(match):
            claim(*match.span())
    blanked = "".join(work)
    for match in _NUMBER.finditer(blanked):
        start, run = match.start(), match.group()
        if run.startswith("(") and ")" not in run:
            start, run = start + 1, run[1:]
        placeholder = _number_placeholder(run)
        if placeholder is not None:
            spans.append((start, match.end(), placeholder))
    return sorted(spans)


def scrub(text: str) -> str:
    """`text` with e-mail addresses, card numbers (Luhn-checked) and phone numbers replaced by placeholders."""
    folded, origin = _fold(text)
    spans = _spans(folded)
    if not spans:
        return text
    out: list[str] = []
    done = 0
    for start, end, placeholder in spans:
        if origin is not None:
            start, end = origin[start], origin[end - 1] + 1
            while end < len(text) and not _fold_char(text[end]):  # a combining mark or invisible character after it
                end += 1
        out.append(text[done:start])
        out.append(placeholder)
        done = end
    out.append(text[done:])
    return "".join(out)
