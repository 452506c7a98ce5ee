"""The README's Testing section quotes e2e/test_example.py whole, so its example is a test that runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_example_is_e2e_test_example():
    testing = (ROOT / "README.md").read_text().split("\n## Testing\n", 1)[1].split("\n## ", 1)[0]
    snippet = testing.split("```python\n", 1)[1].split("```", 1)[0]
    assert snippet == (ROOT / "e2e" / "test_example.py").read_text()
    assert len([line for line in snippet.splitlines() if line.startswith("    ")]) <= 10
