"""The built documentation site shows what its pages include, and works opened from files.

Built here with ``mkdocs build --strict`` into a temporary folder (``make docs`` builds
``docs/_build`` the same way). ``--strict`` cannot see a snippet marker that a formatter rewrote
into something else (``--8 < --"..."`` was shown as text on four pages): this reads the pages.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = REPO / "docs" / "pages"
MARKER = re.compile(r'^-{1,2}8<-{1,2}\s*"([^"]+)"\s*$', re.MULTILINE)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    mkdocs = str(Path(sys.executable).with_name("mkdocs"))
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _text(page: Path) -> str:
    """The page's text as a reader sees it: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


def _included(spec: str) -> str:
    """What ``--8<-- "path[:section]"`` includes."""
    path, _, section = spec.partition(":")
    text = (REPO / path).read_text(encoding="utf-8")
    if not section:
        return text
    match = re.search(rf"# --8<-- \[start:{section}\]\n(.*?)# --8<-- \[end:{section}\]", text, re.DOTALL)
    assert match, f"{path} has no section {section!r}"
    return match.group(1)


def _markers() -> list[tuple[str, str]]:
    return [(page.name, spec) for page in sorted(PAGES.glob("*.md")) for spec in MARKER.findall(page.read_text())]


def test_every_page_source_uses_the_snippet_marker_as_written():
    broken = [f"{p.name}: {line}" for p in PAGES.glob("*.md") for line in p.read_text().splitlines()
              if "8<" in line.replace(" ", "") and not MARKER.match(line) and "[start:" not in line]  # fmt: skip
    assert broken == [] and len(_markers()) >= 5


def test_no_built_page_shows_a_snippet_marker(site):
    shown = [page.name for page in site.glob("*.html") if re.search(r"-\s*-\s*8\s*<\s*-\s*-", _text(page))]
    assert shown == []


@pytest.mark.parametrize(("page", "spec"), [(page, spec) for page, spec in _markers() if ".py" in spec])
def test_each_page_shows_the_code_it_includes(site, page, spec):
    text = _text(site / page.replace(".md", ".html"))
    lines = [line.strip() for line in _included(spec).splitlines() if line.strip() and not line.startswith("# --8<--")]
    missing = [line for line in lines if line not in text]
    assert missing == [], f"{page} lacks {len(missing)} of {len(lines)} lines of {spec}, first: {missing[:3]}"


def test_the_site_opened_from_files_links_to_pages_not_folders(site):
    index = site / "index.html"
    links = re.findall(r'href="([^"#]+)(?:#[^"]*)?"', index.read_text(encoding="utf-8"))
    local = [unquote(link) for link in links if not urlsplit(link).scheme and not link.startswith("//")]
    pages = [link for link in local if not link.endswith((".css", ".js", ".png", ".svg", ".ico", ".xml", ".json"))]
    assert len(pages) >= 10
    for link in pages:
        target = (index.parent / link).resolve()
        assert target.is_file(), f"index.html links to {link!r}, which opened from disk is not a page"
