"""Check a built book in a real browser: every page, offline.

``tests/test_site.py`` drives this module. It serves the built site (``_build/html``) from a
local HTTP server on 127.0.0.1, opens every page in headless Chromium -- which cannot reach
any other host, so an asset that the site does not serve itself fails visibly -- and gathers,
in one pass over the pages, everything the tests then assert on:

- console errors (the browser log at level SEVERE) and failed requests (the server's log of
  every request with its status, and Chromium's own network log: responses >= 400 and
  requests that failed to load, e.g. a CDN host that cannot be resolved);
- MathJax: whether it finished (``MathJax.startup.promise``), every ``.math`` element holds an
  ``mjx-container``, no TeX error (``mjx-merror``), and no raw TeX (``$...$``, ``\\(``,
  ``\\[``, ``\\begin{``) is left in the text outside code;
- images: decoded with a non-zero natural size and carrying a real alt text (not empty, not
  the image's file name);
- links: every ``a[href]`` (and ``<link rel=next|prev|...>``) inside the site, with the ids
  each page has, to resolve anchors;
- a screenshot of each page's first screen (1280x900) under ``screenshots/`` next to the site.

It also runs the search box: types a word, submits and reads the result list.

Needs Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``) and
``selenium``; :func:`find_browser` says whether they are there.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

APT_COMMAND = "apt-get update && apt-get install -y chromium chromium-driver"
WINDOW = (1280, 900)
PAGE_TIMEOUT_S = 60
MATHJAX_TIMEOUT_S = 60

#: Chromium flags: headless, no GPU, nothing fetched behind our back, and every host other than
#: 127.0.0.1 unresolvable, so a remote asset is a failed request instead of a silent download.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)


# --------------------------------------------------------------------------- locating things


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def site_dir() -> Path:
    """The built site: ``$GMCOURSE_SITE`` or ``_build/html`` under the repository root."""
    env = os.environ.get("GMCOURSE_SITE")
    return Path(env).resolve() if env else repo_root() / "_build" / "html"


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) executables, or None when either is missing.

    ``$GMCOURSE_BROWSER`` and ``$GMCOURSE_CHROMEDRIVER`` name a pair that belongs together (e.g. the
    Google Chrome and the ChromeDriver of a GitHub runner); otherwise the first Chromium on PATH.
    """
    chromium = shutil.which(os.environ.get("GMCOURSE_BROWSER", "")) if os.environ.get("GMCOURSE_BROWSER") else next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
    )
    driver = shutil.which(os.environ.get("GMCOURSE_CHROMEDRIVER") or "chromedriver")
    return (chromium, driver) if chromium and driver else None


def site_pages(site: Path) -> list[str]:
    """Every HTML page of the site, as paths relative to it (sorted, ``/`` separators)."""
    return sorted(
        p.relative_to(site).as_posix()
        for p in site.rglob("*.html")
        # _static holds theme templates and MathJax, _sources the downloadable sources
        if not p.relative_to(site).as_posix().startswith(("_static/", "_sources/", "_images/"))
    )


# --------------------------------------------------------------------------- the local server


@dataclass
class Request:
    path: str
    status: int
    referer: str


class SiteServer:
    """The site on http://127.0.0.1:<free port>/, in a thread, logging every request."""

    def __init__(self, site: Path):
        self.site = site
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, code="-", size="-"):
                try:
                    status = int(getattr(code, "value", code))
                except (TypeError, ValueError):
                    status = 0
                with server._lock:
                    server.requests.append(Request(unquote(self.path), status, self.headers.get("Referer", "")))

            def log_message(self, format, *args):  # noqa: A002 - quiet
                pass

            def end_headers(self):
                self.send_header("Cache-Control", "no-store")
                super().end_headers()

        Handler.extensions_map = {**Handler.extensions_map, ".woff": "font/woff", ".woff2": "font/woff2",
                                  ".js": "text/javascript", ".svg": "image/svg+xml"}
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="site-server", daemon=True)

    def __enter__(self) -> "SiteServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def failed(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.status >= 400 or r.status == 0]


# --------------------------------------------------------------------------- the browser


def start_browser(chromium: str, chromedriver: str, user_data_dir: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    options.page_load_strategy = "normal"
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    driver.set_script_timeout(MATHJAX_TIMEOUT_S)
    # exactly WINDOW CSS pixels of viewport, whatever the window decorations
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False},
    )
    # forget what the browser's start page did: the logs from here on belong to the site
    driver.get("about:blank")
    driver.get_log("browser")
    driver.get_log("performance")
    return driver


# Waits for the page's MathJax (if it has one) to finish typesetting and for the web fonts.
_WAIT_JS = r"""
const done = arguments[arguments.length - 1];
const deadline = Date.now() + arguments[0] * 1000;
const hasMath = document.querySelector('.math') !== null;
let completeSince = null;
function fonts() { return document.fonts ? document.fonts.ready : Promise.resolve(); }
function poll() {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) {
    mj.startup.promise.then(fonts).then(() => done('typeset'), (e) => done('error: ' + e));
    return;
  }
  if (document.readyState === 'complete') {
    if (!hasMath) { fonts().then(() => done(mj ? 'no-math' : 'no-mathjax')); return; }
    // every deferred script has run by now; give MathJax two seconds more to start
    completeSince = completeSince || Date.now();
    if (Date.now() - completeSince > 2000) {
      done(mj ? 'MathJax did not start: its script did not load or failed (window.MathJax is only the configuration)'
              : 'no MathJax on a page with formulas');
      return;
    }
  }
  if (Date.now() > deadline) { done('MathJax did not start within the time limit'); return; }
  setTimeout(poll, 50);
}
// images: make lazy ones load, then wait until each has loaded or failed
for (const img of document.images) { if (img.loading === 'lazy') img.loading = 'eager'; }
Promise.all(Array.from(document.images).map((img) => img.decode().catch(() => null))).then(poll);
"""

# Everything the checks need from one page, in one round trip.
_GATHER_JS = r"""
const out = {};
// --- MathJax
const maths = Array.from(document.querySelectorAll('.math'));
out.math_count = maths.length;
out.math_untypeset = maths.filter((m) => !m.querySelector('mjx-container'))
  .map((m) => m.textContent.trim().slice(0, 80));
// TeX errors: MathJax draws a parse error as <merror>, and (with its noundefined extension) an
// undefined macro as the red text "\name"; read both from MathJax's own trees, with the source
const errors = [];
const mjdoc = window.MathJax && MathJax.startup && MathJax.startup.document;
if (mjdoc && mjdoc.math) {
  for (const item of mjdoc.math) {
    if (!item.root || !item.root.walkTree) continue;
    const source = String(item.math).trim().slice(0, 100);
    item.root.walkTree((node) => {
      if (node.isKind('merror')) {
        errors.push(`${node.attributes.get('data-mjx-error') || 'TeX error'} in ${source}`);
      } else if (node.isKind('mtext') && node.attributes.get('mathcolor') === 'red') {
        const text = node.childNodes.map((c) => (c.getText ? c.getText() : '')).join('');
        if (text.startsWith('\\')) errors.push(`undefined control sequence ${text} in ${source}`);
      }
    });
  }
}
if (!errors.length) {  // no MathJax document to ask: the rendered error boxes
  for (const e of document.querySelectorAll('mjx-merror')) {
    errors.push((e.getAttribute('data-mjx-error') || 'TeX error').slice(0, 120));
  }
}
out.math_errors = errors;
// --- raw TeX left in text outside code (and outside what MathJax produced)
const SKIP = new Set(['PRE', 'CODE', 'SCRIPT', 'STYLE', 'TEXTAREA', 'NOSCRIPT', 'MJX-CONTAINER', 'KBD', 'SAMP']);
const raw = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
  acceptNode(node) {
    for (let el = node.parentElement; el && el !== document.body; el = el.parentElement) {
      if (SKIP.has(el.tagName.toUpperCase())) return NodeFilter.FILTER_REJECT;
    }
    return NodeFilter.FILTER_ACCEPT;
  }
});
const TEX = [/\$\$[\s\S]+?\$\$/, /(^|[^\\$])\$(?=\S)[^$\n]*?\S\$(?!\d)/, /\\\(/, /\\\[/, /\\begin\{/];
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const text = n.nodeValue;
  for (const re of TEX) {
    const m = re.exec(text);
    if (m) {
      const at = Math.max(0, m.index - 30);
      raw.push(text.slice(at, m.index + m[0].length + 30).replace(/\s+/g, ' ').trim());
      break;
    }
  }
}
out.raw_tex = raw;
// --- images
out.images = Array.from(document.images).map((img) => ({
  src: img.currentSrc || img.src,
  complete: img.complete,
  width: img.naturalWidth,
  height: img.naturalHeight,
  alt: img.getAttribute('alt'),
}));
// --- links and anchors
// every link a reader or the browser can follow: <a href>, and <link rel=next/prev/index/...>
// (stylesheets, preloads and icons are requests, checked through the network log)
const LINKS = 'a[href], link[href]:not([rel~=stylesheet]):not([rel~=preload]):not([rel~=icon])';
out.links = Array.from(document.querySelectorAll(LINKS)).map((a) => ({
  href: a.href, raw: a.getAttribute('href'),
  text: a.tagName === 'LINK' ? `<link rel=${a.getAttribute('rel')}>` : (a.textContent || '').trim().slice(0, 60),
}));
out.ids = Array.from(document.querySelectorAll('[id]')).map((e) => e.id)
  .concat(Array.from(document.querySelectorAll('a[name]')).map((e) => e.getAttribute('name')));
out.title = document.title;
return out;
"""


@dataclass
class PageResult:
    page: str
    mathjax: str = ""
    math_count: int = 0
    math_untypeset: list[str] = field(default_factory=list)
    math_errors: list[str] = field(default_factory=list)
    raw_tex: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    links: list[dict] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    console_errors: list[str] = field(default_factory=list)
    network_failures: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    title: str = ""
    seconds: float = 0.0


@dataclass
class SearchResult:
    query: str
    expected: str
    found: list[str]
    status: str
    console_errors: list[str] = field(default_factory=list)
    network_failures: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)


@dataclass
class SiteReport:
    site: Path
    base_url: str
    pages: dict[str, PageResult]
    server_failures: list[Request]
    searches: list[SearchResult]
    seconds: float


def _network_events(driver, base_url: str) -> tuple[list[str], list[str]]:
    """(failures, external requests) from Chromium's performance log since the last call."""
    urls: dict[str, str] = {}
    failures, external = [], []
    origin = base_url.rstrip("/")
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            urls[params["requestId"]] = url
            # chrome:// and devtools:// are the browser's own pages (its start page), not the site's
            if url.split(":", 1)[0] in ("http", "https", "ws", "wss") and not url.startswith(origin + "/"):
                external.append(url)
        elif method == "Network.responseReceived":
            response = params["response"]
            if response.get("status", 0) >= 400:
                failures.append(f"HTTP {response['status']} {response['url']}")
        elif method == "Network.loadingFailed":
            if params.get("canceled"):
                continue  # a request the page itself gave up (e.g. a prefetch when navigating on)
            url = urls.get(params["requestId"], f"request {params['requestId']}")
            failures.append(f"{params.get('errorText', 'failed')} {url}")
    return failures, external


def screenshot_name(page: str) -> str:
    return page[: -len(".html")].replace("/", "__") + ".png"


def check_page(driver, base_url: str, page: str, screenshots: Path | None) -> PageResult:
    from selenium.common.exceptions import TimeoutException

    result = PageResult(page)
    start = time.monotonic()
    driver.get(base_url + page)
    try:
        result.mathjax = driver.execute_async_script(_WAIT_JS, MATHJAX_TIMEOUT_S - 10)
    except TimeoutException:
        result.mathjax = f"MathJax did not finish typesetting within {MATHJAX_TIMEOUT_S} s"
    data = driver.execute_script(_GATHER_JS)
    result.math_count = data["math_count"]
    result.math_untypeset = data["math_untypeset"]
    result.math_errors = data["math_errors"]
    result.raw_tex = data["raw_tex"]
    result.images = data["images"]
    result.links = data["links"]
    result.ids = set(data["ids"])
    result.title = data["title"]
    if screenshots is not None:
        driver.execute_script("window.scrollTo(0, 0)")
        path = screenshots / screenshot_name(page)
        driver.save_screenshot(str(path))
        result.screenshot = path
    result.console_errors = [
        e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"
    ]
    result.network_failures, result.external_requests = _network_events(driver, base_url)
    result.seconds = time.monotonic() - start
    return result


def run_search(driver, base_url: str, query: str, expected: str) -> SearchResult:
    """Type ``query`` into the search box of the home page, submit, and list the result pages."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, PAGE_TIMEOUT_S)
    driver.get(base_url + "index.html")  # redirects to the first chapter

    def visible_button(d):
        return next((b for b in d.find_elements(By.CSS_SELECTOR, "button.search-button__button") if b.is_displayed()),
                    False)

    try:
        button = wait.until(visible_button)
    except Exception as exc:  # noqa: BLE001 - reported in the assertion
        return SearchResult(query, expected, [], f"no visible search button on {driver.current_url}: {type(exc).__name__}")
    button.click()
    box = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#pst-search-dialog input[name=q]")))
    box.send_keys(query)
    box.send_keys(Keys.ENTER)
    wait.until(lambda d: "search.html" in d.current_url)
    try:
        wait.until(lambda d: re.search(r"Search finished|did not match|no results|found \d+",
                                       d.find_element(By.ID, "search-results").text, re.I))
    except Exception as exc:  # noqa: BLE001 - reported in the assertion
        return SearchResult(query, expected, [], f"the search never finished: {type(exc).__name__}")
    status = driver.find_element(By.CSS_SELECTOR, "#search-results .search-summary").text
    hrefs = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#search-results ul.search li a")]
    found = []
    for href in hrefs:
        path = urlsplit(urldefrag(href)[0]).path.lstrip("/")
        if path not in found:
            found.append(path)
    result = SearchResult(query, expected, found, status)
    result.console_errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    result.network_failures, result.external_requests = _network_events(driver, base_url)
    return result


def check_site(site: Path, searches: list[tuple[str, str]], screenshots: Path | None = None,
               browser: tuple[str, str] | None = None, pages: list[str] | None = None) -> SiteReport:
    """Open every page of ``site`` in headless Chromium and gather what the tests assert on."""
    browser = browser or find_browser()
    if browser is None:
        raise RuntimeError(f"Chromium and chromedriver are needed: {APT_COMMAND}")
    pages = site_pages(site) if pages is None else pages
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    results: dict[str, PageResult] = {}
    search_results: list[SearchResult] = []
    with tempfile.TemporaryDirectory(prefix="gmcourse-chromium-") as profile, SiteServer(site) as server:
        driver = start_browser(*browser, profile)
        try:
            for page in pages:
                results[page] = check_page(driver, server.url, page, screenshots)
            for query, expected in searches:
                search_results.append(run_search(driver, server.url, query, expected))
        finally:
            driver.quit()
        server_failures = server.failed()
    return SiteReport(site, server.url, results, server_failures, search_results, time.monotonic() - start)


# --------------------------------------------------------------------------- link resolution


def broken_links(report: SiteReport) -> list[str]:
    """Every internal link whose target file is missing, or whose ``#anchor`` is not on its page."""
    problems = []
    site = report.site
    origin = report.base_url.rstrip("/")
    for page, result in report.pages.items():
        for link in result.links:
            href = link["href"]
            if not href.startswith(origin + "/"):
                continue  # another site (fine), mailto:, javascript:
            url, fragment = urldefrag(href)
            path = unquote(urlsplit(url).path).lstrip("/")
            target = site / path
            if path == "" or target.is_dir():
                path = (path.rstrip("/") + "/index.html").lstrip("/")
                target = site / path
            where = f"{page}: link {link['raw']!r} ({link['text']!r})"
            if not target.is_file():
                problems.append(f"{where}: {path} does not exist")
                continue
            if not fragment:
                continue
            fragment = unquote(fragment)
            if path in report.pages:
                if fragment not in report.pages[path].ids:
                    problems.append(f"{where}: no element with id {fragment!r} on {path}")
            elif path.endswith(".html"):
                text = target.read_text(errors="replace")
                if not re.search(rf"""(id|name)=["']{re.escape(fragment)}["']""", text):
                    problems.append(f"{where}: no element with id {fragment!r} in {path}")
            else:
                problems.append(f"{where}: an anchor into {path}, which is not a page")
    return problems


# --------------------------------------------------------------------------- image checks

_FILE_NAME = re.compile(r"^\S+\.(png|jpe?g|gif|svg|webp)$", re.I)


def image_problems(result: PageResult) -> list[str]:
    problems = []
    for img in result.images:
        name = img["src"].rsplit("/", 1)[-1]
        if not img["complete"] or not img["width"] or not img["height"]:
            problems.append(f"{result.page}: image {name} did not load "
                            f"(complete={img['complete']}, natural size {img['width']}x{img['height']})")
        alt = (img["alt"] or "").strip()
        if not alt:
            problems.append(f"{result.page}: image {name} has no alt text")
        elif _FILE_NAME.match(alt) or alt.rsplit("/", 1)[-1] == name:
            problems.append(f"{result.page}: image {name} has a file name for alt text ({alt!r})")
    return problems
