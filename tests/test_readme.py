"""README opens with the two set-up commands, and CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block and text.index("```bash") < 40, "README must open with the set-up commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_two_commands() -> None:
    build_cmd, test_cmd = readme_commands()
    assert build_cmd.endswith("pip install -e . && sitegen build")
    assert test_cmd.endswith("pip install -e '.[test]' && pytest")


def test_ci_runs_the_readme_test_command() -> None:
    _, test_cmd = readme_commands()
    tail = test_cmd.split("&& ", 2)[-1]  # after venv creation + activation, which CI does itself
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tail in ci, f"{tail!r} not a line of .ci/run"
