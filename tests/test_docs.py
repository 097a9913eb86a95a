"""The user guide in docs/ keeps up with the code: every public name of ``rllm`` is in the API
reference, every subcommand has a section, and links between pages resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import rllm
from rllm.cli import SUBCOMMANDS

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))
if not PAGES:  # docs are not part of the installed package: only a checkout has them
    pytest.skip(f"no docs in {DOCS}", allow_module_level=True)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_public_name_is_in_the_api_reference() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = [n for n in rllm.__all__ if not re.search(rf"`(rllm\.)?{re.escape(n)}[`(]", text)]
    assert not missing, f"docs/api.md does not document {missing}"


def test_every_subcommand_is_documented() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    missing = [c for c in SUBCOMMANDS if f"rllm {c}" not in text]
    assert not missing, f"docs/ never mentions {['rllm ' + c for c in missing]}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        file, _, anchor = target.partition("#")
        doc = (page.parent / file).resolve() if file else page
        assert doc.exists(), f"{page.name}: link to missing {file}"
        if anchor and doc.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", doc.read_text(encoding="utf-8"), re.M)
            assert anchor in {_anchor(h) for h in headings}, f"{page.name}: no #{anchor}"
