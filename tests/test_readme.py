"""The README's commands stay true: CI runs exactly its test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    head = text.split("---", 1)[0]  # the first screen
    return re.findall(r"```bash\n(.+?)\n```", head)


def test_first_screen_has_run_and_test_commands():
    run, test = _commands()[:2]
    assert run.startswith("pip install torch==2.13.0")
    assert "pytest" in test


def test_ci_runs_the_readme_test_command():
    test = _commands()[1]
    test_runner = test.split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_runner in ci.splitlines()
    assert "torch==2.13.0" in ci.split(test_runner)[0]
