import pytest

from gateway.scrub import luhn_ok, scrub


@pytest.mark.parametrize("text, expected", [
    ("write to a.b+c@mail.example.org now", "write to [email] now"),
    ("card 4111-1111-1111-1111 please", "card [card] please"),
    ("call +44 20 7946 0958", "call [phone]"),
    ("call (415) 555-0100", "call [phone]"),
    ("order 4111 1111 1111 1112 is not a valid card", "order [phone] is not a valid card"),
    ("it said 2023 was the year", "it said 2023 was the year"),
    ("answer was 42% too long", "answer was 42% too long"),
])
def test_scrub(text, expected):
    assert scrub(text) == expected


def test_luhn():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
