"""A deliberately failing test, run only by e2e/test_evidence.py in a subprocess (pytest collects test_*.py files,
so the suite itself never picks this one up)."""

from e2e.chats import DemoChat

PROMPT = "How should I choose a database for a small web app?"


def test_passes(demo: DemoChat):
    demo.open()
    demo.ask(PROMPT)


def test_fails(demo: DemoChat):
    demo.open()
    trace = demo.ask(PROMPT)
    demo.page.evaluate("() => console.log('the sample test was here')")
    demo.part(trace, "up").click()
    demo.stored(trace, lambda t: t["rating"])
    assert demo.answers() == 2, "deliberately failing"
