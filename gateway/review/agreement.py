"""Inter-reviewer agreement: Cohen's κ for two reviewers, Krippendorff's α (nominal) for more.

Ratings come as {item: {reviewer: value}}. Only items with at least two ratings count. When exactly two reviewers rated
those items, the measure is Cohen's κ over the items both rated; otherwise (several reviewers, each item rated by any
two or more of them) Krippendorff's α for nominal data, which allows a different set of reviewers per item. A label
in a multi-label taxonomy is agreed on as a yes/no value per item and reviewer (`label_agreement`).

Both are None where they are undefined: when chance alone would explain every rating (every reviewer gave the same
single value to every item, so expected agreement is total and the ratio is 0/0).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from typing import Literal, NamedTuple

Ratings = Mapping[Hashable, Mapping[str, Hashable]]  # item → reviewer → value


class Agreement(NamedTuple):
    method: Literal["cohen_kappa", "krippendorff_alpha"]
    value: float | None
    items: int  # items rated by two or more reviewers
    reviewers: int  # reviewers who rated any of those


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Cohen's κ = (p_o - p_e) / (1 - p_e) for two raters' values of the same items, in the same order."""
    if len(first) != len(second):
        raise ValueError("both raters must rate the same items")
    n = len(first)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(first, second)) / n
    first_counts, second_counts = Counter(first), Counter(second)
    expected = sum(count * second_counts[value] for value, count in first_counts.items()) / (n * n)
    return None if expected == 1 else (observed - expected) / (1 - expected)


def krippendorff_alpha(units: Iterable[Sequence[Hashable]]) -> float | None:
    """Krippendorff's α for nominal values: 1 - D_o / D_e, from the coincidence matrix (Krippendorff 2011).

    Each unit is the values its coders gave (any number; a unit with fewer than two values cannot be paired and is
    left out). With n pairable values and n_c of value c: α = 1 - (n - 1) Σ_u [Σ_{c≠k} n_uc n_uk / (m_u - 1)] /
    Σ_{c≠k} n_c n_k.
    """
    observed_disagreement = 0.0
    totals: Counter[Hashable] = Counter()
    for unit in units:
        if len(unit) < 2:
            continue
        counts = Counter(unit)
        m = len(unit)
        observed_disagreement += (m * m - sum(c * c for c in counts.values())) / (m - 1)
        totals.update(counts)
    n = sum(totals.values())
    expected_disagreement = n * n - sum(c * c for c in totals.values())
    if expected_disagreement == 0:
        return None
    return 1 - (n - 1) * observed_disagreement / expected_disagreement


def nominal_agreement(ratings: Ratings) -> Agreement | None:
    """Agreement on one nominal value per item and reviewer (a label's yes/no, a pairwise a/b/tie); None when no item
    has two ratings."""
    shared = {item: by_reviewer for item, by_reviewer in ratings.items() if len(by_reviewer) >= 2}
    reviewers = sorted({reviewer for by_reviewer in shared.values() for reviewer in by_reviewer})
    if not shared:
        return None
    if len(reviewers) == 2:
        first, second = reviewers
        pairs = [(r[first], r[second]) for r in shared.values()]
        value = cohen_kappa([a for a, _ in pairs], [b for _, b in pairs])
        return Agreement("cohen_kappa", value, len(shared), 2)
    value = krippendorff_alpha([list(by_reviewer.values()) for by_reviewer in shared.values()])
    return Agreement("krippendorff_alpha", value, len(shared), len(reviewers))


def label_agreement(annotations: Mapping[Hashable, Mapping[str, Collection[str]]],
                    labels: Iterable[str]) -> dict[str, Agreement | None]:
    """Per label of the taxonomy, agreement on whether each item has it: {item: {reviewer: labels given}} in."""
    return {label: nominal_agreement({item: {reviewer: label in given for reviewer, given in by_reviewer.items()}
                                      for item, by_reviewer in annotations.items()})
            for label in labels}
