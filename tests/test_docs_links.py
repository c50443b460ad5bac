"""README.md and docs/*.md: every relative link resolves inside the repository, and the test
markers the README names are declared in pyproject.toml."""

from __future__ import annotations

import re

import pytest
from helpers import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
# [text](target) and [text]: target, outside code spans; the target up to a space or ")"
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|^\[[^\]]+\]:\s*(\S+)", re.M)
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def relative_links(text: str) -> list[str]:
    """Link targets that are paths (not URLs, not in-page anchors), fragments stripped."""
    targets = [a or b for a, b in _LINK.findall(_CODE.sub("", text))]
    return [t.split("#", 1)[0] for t in targets
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_docs_exist():
    names = {p.name for p in DOCS}
    assert {"README.md", "architecture.md", "sam3_facts.md", "evaluation.md"} <= names


def test_relative_links_are_found():
    assert relative_links("[a](docs/x.md#s) [u](https://x.org) [h](#top) `[c](no.md)`") == ["docs/x.md"]


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_relative_links_resolve_inside_the_repository(doc):
    for target in relative_links(doc.read_text()):
        path = (doc.parent / target).resolve()
        assert path.is_relative_to(REPO_ROOT), f"{doc.name}: {target} points outside the repository"
        assert path.exists(), f"{doc.name}: {target} does not exist"


def test_markers_named_in_the_readme_are_declared(pytestconfig):
    # the markers of pyproject.toml's [tool.pytest.ini_options], as pytest read them
    declared = {m.split(":", 1)[0].strip() for m in pytestconfig.getini("markers")}
    named = set()
    for expr in re.findall(r'pytest -m "([^"]+)"', (REPO_ROOT / "README.md").read_text()):
        named |= set(re.findall(r"[A-Za-z_]\w*", expr)) - {"not", "and", "or"}
    assert named and named <= declared
