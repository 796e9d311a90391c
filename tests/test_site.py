"""The built book in a real browser: every page, with no network.

One headless Chromium session (``gmcourse.sitecheck``) opens every page of the built site,
served from 127.0.0.1 with every other host unresolvable, and gathers all the per-page facts
in one pass; the tests below each assert on one kind of fact, so a failure names what broke
and where. Screenshots of each page's first screen (1280x900) go to ``_build/screenshots/``
(next to the site) for a person to look at.

- the site: ``$GMCOURSE_SITE`` or ``_build/html``; no site -> skipped (``make book`` first),
  or failed when ``GMCOURSE_REQUIRE_SITE=1``;
- the browser: Chromium and chromedriver on PATH; missing -> skipped with the apt-get
  command, or failed when ``GMCOURSE_REQUIRE_BROWSER=1`` (CI sets it).

``test_the_checks_catch_a_broken_page`` runs the same checks on a small page that is broken in
every way checked, so that each check is seen to fail when it should.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest

from gmcourse import sitecheck
from gmcourse.bookcheck import toc_files

pytestmark = pytest.mark.site

ROOT = Path(__file__).resolve().parent.parent

# (word typed into the search box, page that must be among the results)
SEARCHES = [
    ("Metropolis", "book/03_sampling.html"),  # in the chapter's title
    ("RealNVP", "book/05_normalizing_flows.html"),
    ("Wolff", "book/03_sampling.html"),  # only in the chapter's text
]


def _browser_or_skip() -> tuple[str, str]:
    browser = sitecheck.find_browser()
    if browser is None:
        message = f"Chromium and chromedriver not found; install them with `{sitecheck.APT_COMMAND}`"
        if os.environ.get("GMCOURSE_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (GMCOURSE_REQUIRE_BROWSER=1)")
        pytest.skip(message)
    return browser


def _built_site_or_skip() -> Path:
    site = sitecheck.site_dir()
    if not (site / "index.html").is_file():
        message = f"no built site at {site}; run `make book` first"
        if os.environ.get("GMCOURSE_REQUIRE_SITE") == "1":
            pytest.fail(message + " (GMCOURSE_REQUIRE_SITE=1)")
        pytest.skip(message)
    return site


@pytest.fixture(scope="module")
def report() -> sitecheck.SiteReport:
    site = _built_site_or_skip()
    browser = _browser_or_skip()
    screenshots = site.parent / "screenshots"
    result = sitecheck.check_site(site, SEARCHES, screenshots=screenshots, browser=browser)
    slowest = sorted(result.pages.values(), key=lambda r: -r.seconds)[:3]
    print(f"\nsitecheck: {len(result.pages)} pages of {site} in {result.seconds:.0f} s (slowest: "
          + ", ".join(f"{r.page} {r.seconds:.1f} s" for r in slowest) + f"); screenshots in {screenshots}")
    return result


def _fail_if(problems: list[str], what: str) -> None:
    if problems:
        shown = "\n  ".join(problems[:60])
        more = f"\n  ... and {len(problems) - 60} more" if len(problems) > 60 else ""
        pytest.fail(f"{len(problems)} {what}:\n  {shown}{more}", pytrace=False)


def test_every_page_of_the_book_was_opened(report):
    opened = set(report.pages)
    # the table of contents the site was built from: the one next to it, else this repository's
    toc = report.site.parent.parent / "_toc.yml"
    toc = toc if toc.is_file() else ROOT / "_toc.yml"
    missing = [f"{doc}.html" for doc in toc_files(toc) if f"{doc}.html" not in opened]
    _fail_if(missing, "pages of _toc.yml not in the site or not opened")
    assert "index.html" in opened and "search.html" in opened, sorted(opened)


def test_no_console_errors(report):
    problems = [f"{page}: {message}" for page, r in report.pages.items() for message in r.console_errors]
    problems += [f"search for {s.query!r}: {message}" for s in report.searches for message in s.console_errors]
    _fail_if(problems, "console errors")


def test_no_failed_requests(report):
    problems = [f"{page}: {failure}" for page, r in report.pages.items() for failure in r.network_failures]
    problems += [f"search for {s.query!r}: {failure}" for s in report.searches for failure in s.network_failures]
    problems += [f"server answered {r.status} to {r.path} (from {r.referer or 'no referer'})"
                 for r in report.server_failures]
    _fail_if(problems, "failed requests")


def test_nothing_is_loaded_from_another_host(report):
    problems = [f"{page}: {url}" for page, r in report.pages.items() for url in r.external_requests]
    problems += [f"search for {s.query!r}: {url}" for s in report.searches for url in s.external_requests]
    _fail_if(problems, "requests to hosts other than the site (the site must work offline)")


def test_mathjax_typesets_every_formula(report):
    problems = []
    for page, r in report.pages.items():
        if r.math_count and r.mathjax != "typeset":
            problems.append(f"{page}: {r.math_count} formulas but MathJax did not finish: {r.mathjax}")
        problems += [f"{page}: formula not typeset: {tex!r}" for tex in r.math_untypeset]
        problems += [f"{page}: MathJax error: {error!r}" for error in r.math_errors]
    _fail_if(problems, "problems with formulas")
    typeset = [page for page, r in report.pages.items() if r.math_count]
    assert len(typeset) >= 10, f"only {typeset} have formulas: are the chapters' formulas rendered as .math?"


def test_no_raw_tex_left_in_the_text(report):
    _fail_if([f"{page}: raw TeX in the text: {snippet!r}" for page, r in report.pages.items() for snippet in r.raw_tex],
             "pieces of TeX that were not typeset")


def test_every_image_loads_and_has_alt_text(report):
    _fail_if([p for r in report.pages.values() for p in sitecheck.image_problems(r)], "image problems")
    figures = sum(1 for r in report.pages.values() for img in r.images if "/_images/" in img["src"])
    assert figures >= 20, f"only {figures} chapter figures found in the site"


def test_search_box_finds_chapters(report):
    problems = [f"search for {s.query!r}: {s.expected} not among the results {s.found} ({s.status})"
                for s in report.searches if s.expected not in s.found]
    _fail_if(problems, "searches that missed their chapter")
    assert len(report.searches) == len(SEARCHES)


def test_internal_links_and_anchors_resolve(report):
    _fail_if(sitecheck.broken_links(report), "broken internal links")
    n_anchors = sum(1 for r in report.pages.values() for link in r.links
                    if link["href"].startswith(report.base_url) and "#" in link["href"])
    assert n_anchors > 100, f"only {n_anchors} internal links with an anchor: were the links gathered?"


def test_a_screenshot_of_every_page(report):
    problems = []
    for page, r in report.pages.items():
        if r.screenshot is None or not r.screenshot.is_file():
            problems.append(f"{page}: no screenshot")
            continue
        width, height = struct.unpack(">II", r.screenshot.read_bytes()[16:24])  # PNG IHDR
        if (width, height) != sitecheck.WINDOW:
            problems.append(f"{page}: screenshot {r.screenshot.name} is {width}x{height}, not {sitecheck.WINDOW}")
    _fail_if(problems, "screenshot problems")


# --------------------------------------------------------------------------- the checks can fail


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x80\x80\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


BROKEN_PAGE = r"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>broken</title>
<script>window.MathJax = {tex: {inlineMath: [["\\(", "\\)"]], processEscapes: true}};</script>
<script defer src="mathjax/tex-chtml.js"></script>
<script src="https://cdn.example.org/library.js"></script>
<link rel="stylesheet" href="missing.css">
</head><body>
<h1 id="top">A page broken in every way the site check looks for</h1>
<p>Typeset: <span class="math">\(x^2\)</span>. An undefined macro: <span class="math">\(\nosuchmacro{x}\)</span>.
A TeX error: <span class="math">\(x^2^3\)</span>.
Without delimiters MathJax cannot find: <span class="math">y_1</span>.</p>
<p>Dollars that no parser turned into math: $\alpha + \beta$.</p>
<p class="mathjax_ignore">A display in a part that MathJax is told to skip: \[ z \]</p>
<pre>code may hold $HOME and \(anything\)</pre>
<p>Prices are not math: it costs $5 or $6.</p>
<img src="good.png" alt="a grey square">
<img src="missing.png" alt="a figure that is not there">
<img src="good.png">
<img src="good.png" alt="good.png">
<a href="other.html">missing page</a> <a href="index.html#nowhere">missing anchor</a>
<a href="index.html#top">fine anchor</a> <a href="https://example.org/">another site is fine</a>
<script>console.error("something broke");</script>
</body></html>
"""


def test_the_checks_catch_a_broken_page(tmp_path):
    browser = _browser_or_skip()
    import mathjax  # django-static-mathjax, as used by book/_ext/gmcourse_site.py

    site = tmp_path / "site"
    site.mkdir()
    (site / "mathjax").symlink_to(Path(mathjax.__file__).parent / "static" / "mathjax" / "es5")
    (site / "good.png").write_bytes(_png(4, 3))
    (site / "index.html").write_text(BROKEN_PAGE)
    report = sitecheck.check_site(site, [], screenshots=tmp_path / "shots", browser=browser, pages=["index.html"])
    page = report.pages["index.html"]

    assert any("something broke" in m for m in page.console_errors), page.console_errors
    assert any("missing.css" in f and "404" in f for f in page.network_failures), page.network_failures
    assert any("cdn.example.org" in f for f in page.network_failures), page.network_failures
    assert page.external_requests == ["https://cdn.example.org/library.js"], page.external_requests
    assert {r.path for r in report.server_failures} >= {"/missing.css", "/missing.png"}, report.server_failures

    assert page.mathjax == "typeset", page.mathjax
    assert page.math_count == 4
    assert page.math_untypeset == ["y_1"], page.math_untypeset
    assert len(page.math_errors) == 2, page.math_errors
    assert "undefined control sequence \\nosuchmacro in \\nosuchmacro{x}" in page.math_errors[0], page.math_errors
    assert "Double exponent" in page.math_errors[1] and "x^2^3" in page.math_errors[1], page.math_errors
    assert len(page.raw_tex) == 2, page.raw_tex  # not $HOME in <pre>, not the prices
    assert r"$\alpha + \beta$" in page.raw_tex[0] and r"\[ z \]" in page.raw_tex[1], page.raw_tex

    images = sitecheck.image_problems(page)
    assert len(images) == 3, images
    assert "missing.png did not load" in images[0]
    assert "good.png has no alt text" in images[1]
    assert "file name for alt text" in images[2]

    links = sitecheck.broken_links(report)
    assert len(links) == 2, links
    assert "other.html does not exist" in links[0]
    assert "no element with id 'nowhere'" in links[1]

    assert page.screenshot is not None and page.screenshot.is_file()


def test_assignment_pages_launch_on_colab_binder_and_the_jupyterhub_of_the_config():
    """Each assignment page links its notebook in the course repository on Colab, on Binder and,
    through nbgitpuller, on the hub named in _config.yml; a chapter page (MyST markdown, which
    Colab cannot open) offers Binder and the hub only."""
    import re
    from html import unescape
    from urllib.parse import quote

    import yaml

    site = _built_site_or_skip()
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = config["repository"]["url"].removeprefix("https://github.com/")
    branch = config["repository"]["branch"]
    hub = config["launch_buttons"]["jupyterhub_url"].rstrip("/")
    assignments = [doc for doc in toc_files(ROOT / "_toc.yml") if doc.startswith("exercises/")]
    assert len(assignments) >= 9
    for doc in assignments:
        links = [unescape(h) for h in re.findall(r'href="([^"]+)"', (site / f"{doc}.html").read_text())]
        notebook = f"{doc}.ipynb"
        expected = {
            "Colab": f"https://colab.research.google.com/github/{repo}/blob/{branch}/{notebook}",
            "Binder": f"https://mybinder.org/v2/gh/{repo}/{branch}?urlpath=lab/tree/{notebook}",
            "JupyterHub": f"{hub}/hub/user-redirect/git-pull?repo={quote('https://github.com/' + repo, safe='/')}",
        }
        for name, url in expected.items():
            assert any(link.startswith(url) for link in links), f"{doc}.html has no {name} link starting {url}"
        hub_link = next(link for link in links if link.startswith(expected["JupyterHub"]))
        assert f"lab/tree/{repo.split('/')[1]}/{notebook}" in hub_link and f"branch={branch}" in hub_link
    chapter = (site / "book" / "03_sampling.html").read_text()
    assert "mybinder.org/v2/gh/" in chapter and "colab.research.google.com" not in chapter
