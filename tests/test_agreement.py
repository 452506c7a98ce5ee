import random

import pytest

from gateway.review.agreement import (Agreement, cohen_kappa, krippendorff_alpha, label_agreement,
                                      nominal_agreement)


def test_cohen_kappa_textbook_example():
    # Wikipedia's "Cohen's kappa" example: 50 proposals, both yes 20, A yes B no 5, A no B yes 10, both no 15.
    # p_o = 35/50 = 0.7, p_e = 0.5·0.6 + 0.5·0.4 = 0.5, κ = 0.2 / 0.5 = 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_by_hand():
    # A: 0 1 0 0 0 0 0 0 1 0, B: 1 1 1 0 0 1 0 0 0 0 (Krippendorff 2011's binary example, read as Cohen's):
    # p_o = 6/10; P(A=1) = .2, P(B=1) = .4, p_e = .2·.4 + .8·.6 = .56; κ = .04 / .44.
    a = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    b = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert cohen_kappa(a, b) == pytest.approx(0.04 / 0.44)
    assert cohen_kappa(a, a) == 1.0
    assert cohen_kappa([0, 1], [1, 0]) == pytest.approx(-1.0)


def test_cohen_kappa_undefined_and_bad_input():
    assert cohen_kappa(["x"] * 5, ["x"] * 5) is None  # chance explains all agreement: 0/0
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        cohen_kappa([1, 2], [1])


def test_krippendorff_alpha_textbook_examples():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 2 observers, 10 units, binary: α = 0.095.
    a = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    b = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert krippendorff_alpha(list(zip(a, b))) == pytest.approx(1 - 19 * 8 / (2 * 14 * 6))
    assert round(krippendorff_alpha(list(zip(a, b))), 3) == 0.095
    # The same paper's 4 observers × 12 units with missing values: nominal α = 0.743.
    rows = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[v for v in unit if v is not None] for unit in zip(*rows)]
    assert round(krippendorff_alpha(units), 3) == 0.743


def test_krippendorff_alpha_edges():
    assert krippendorff_alpha([[1, 1], [2, 2, 2]]) == 1.0
    assert krippendorff_alpha([["x", "x"], ["x", "x"]]) is None  # one value throughout: D_e = 0
    assert krippendorff_alpha([[1], [2]]) is None  # no unit can be paired
    assert krippendorff_alpha([[1, 1], [2, 2], [7]]) == krippendorff_alpha([[1, 1], [2, 2]])  # lone values left out


def _expected_kappa(prevalence: float, error: float) -> float:
    # Raters who each flip the true yes/no independently with probability `error`: P(yes) = r for both,
    # p_o = (1-e)² + e², p_e = r² + (1-r)².
    r = prevalence * (1 - error) + (1 - prevalence) * error
    observed, expected = (1 - error) ** 2 + error ** 2, r * r + (1 - r) ** 2
    return (observed - expected) / (1 - expected)


@pytest.mark.parametrize("prevalence,error", [(0.3, 0.1), (0.5, 0.25), (0.1, 0.05)])
def test_agreement_recovers_known_truth_in_a_simulation(prevalence, error):
    rng = random.Random(11)
    truth = [rng.random() < prevalence for _ in range(20_000)]

    def rater() -> list[bool]:
        return [t != (rng.random() < error) for t in truth]

    expected = _expected_kappa(prevalence, error)
    assert cohen_kappa(rater(), rater()) == pytest.approx(expected, abs=0.02)
    # Three raters: with equal marginals α estimates the same quantity.
    assert krippendorff_alpha(list(zip(rater(), rater(), rater()))) == pytest.approx(expected, abs=0.02)


def test_nominal_agreement_picks_cohen_for_two_reviewers_and_alpha_for_more():
    two = {"i1": {"ann": "a", "bob": "a"}, "i2": {"ann": "b", "bob": "a"}, "i3": {"ann": "b", "bob": "b"},
           "i4": {"ann": "a"}}  # rated once: left out
    assert nominal_agreement(two) == Agreement("cohen_kappa", cohen_kappa("abb", "aab"), 3, 2)
    three = {"i1": {"ann": "a", "bob": "a"}, "i2": {"bob": "b", "cy": "b"}, "i3": {"ann": "a", "cy": "b"}}
    assert nominal_agreement(three) == Agreement("krippendorff_alpha",
                                                 krippendorff_alpha([["a", "a"], ["b", "b"], ["a", "b"]]), 3, 3)
    assert nominal_agreement({"i1": {"ann": "a"}}) is None


def test_label_agreement_is_per_label_yes_no():
    annotations = {
        "i1": {"ann": ["tone", "too_long"], "bob": ["tone"]},
        "i2": {"ann": [], "bob": ["too_long"]},
        "i3": {"ann": ["tone"], "bob": ["tone"]},
        "i4": {"ann": [], "bob": []},
    }
    result = label_agreement(annotations, ["tone", "too_long", "unsafe"])
    assert result["tone"] == Agreement("cohen_kappa", 1.0, 4, 2)
    # too_long: ann yes,no,no,no; bob no,yes,no,no → p_o = .5, p_e = .25·.25 + .75·.75 = .625, κ = -1/3.
    assert result["too_long"].value == pytest.approx((0.5 - 0.625) / (1 - 0.625))
    assert result["unsafe"] == Agreement("cohen_kappa", None, 4, 2)  # nobody used it: undefined, not perfect
