"""README.md and docs/*.md: every relative link resolves (file, folder, and #anchor), the README
stays short and links every docs page, and its test command is the one CI runs."""
import re
from pathlib import Path

import pytest

from conftest import REPO

DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = ["configuration", "own-model-and-data", "selection-api", "budgets-and-comparisons",
         "samplers-and-fidelity", "figures", "studies", "performance", "trackers", "reliability", "scale",
         "layout"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans (a link there is no link)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    seen: dict = {}
    out = set()
    for heading in re.findall(r"^#+ (.*)$", re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S),
                              flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(path: Path) -> list:
    bad = []
    for target in LINK.findall(prose(path.read_text())):
        if re.match(r"^[a-z]+:", target):          # http(s), mailto: not ours to check
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    return bad


@pytest.mark.parametrize("path", [REPO / "README.md", *DOCS], ids=lambda p: p.name)
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_the_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n## Two words\n\n## Two words\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#two-words-1) [gone](nope.md) [wrong](a.md#three) [here](#local)\n"
                    "`[code](nope.md)`\n```\n[fenced](nope.md)\n```\n# Local\n")
    assert broken_links(page) == ["nope.md: no such file", "a.md#three: no heading #three in a.md"]


def test_the_readme_is_short_and_links_every_docs_page():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert sorted(p.stem for p in DOCS) == sorted(PAGES)
    linked = {Path(t.partition("#")[0]).stem for t in LINK.findall(prose(text)) if t.startswith("docs/")}
    assert linked >= set(PAGES), set(PAGES) - linked


def test_the_readme_test_command_is_what_ci_runs():
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text().split("## Quickstart", 1)[1], re.S)
    install, test = block.group(1).strip().splitlines()
    ci = (REPO / ".ci" / "run").read_text()
    steps = test.split(" && ")
    assert steps[0] == "python3 -m venv .venv" and steps[0] in ci
    assert install.split(" && ")[:2] == steps[:2]                  # both commands build the same environment
    ci_lines = [line.strip().replace(" -q ", " ") for line in ci.splitlines()]
    for step in steps[1:]:
        assert step.replace(" -q ", " ") in ci_lines, step
