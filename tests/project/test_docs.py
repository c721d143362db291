"""The documentation that is generated or points at files: current with the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def generate_cli_reference(dest: Path) -> str:
    """docs/cli.md as `make docs` writes it (typer's own generator, from the app)."""
    typer = Path(sys.executable).parent / "typer"
    res = subprocess.run(
        [str(typer), "dsgan_cli.cli", "utils", "docs", "--name", "dsgan", "--title", "dsgan command reference", "--output", str(dest)],
        cwd=REPO,
        env={**os.environ, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return dest.read_text(encoding="utf-8")


def test_cli_reference_is_current(tmp_path):
    fresh = generate_cli_reference(tmp_path / "cli.md")
    for command in ("prepare", "train", "degrade", "pairs", "import", "weights", "eval", "demo"):
        assert f"## `dsgan {command}`" in fresh, command
    assert (REPO / "docs" / "cli.md").read_text(encoding="utf-8") == fresh, "docs/cli.md differs from the app's options: run `make docs`"


def test_readme_is_short_and_its_links_lead_somewhere():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert links and all((REPO / link).exists() for link in links), [link for link in links if not (REPO / link).exists()]
    for doc in (REPO / "docs").glob("*.md"):  # the docs' own links to each other
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            assert (doc.parent / link).exists(), f"{doc.name}: {link}"
