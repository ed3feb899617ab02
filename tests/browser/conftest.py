"""Browser tests: Playwright for Python driving Debian's Chromium against a live server and real workers.

The live server (pytest-django's `live_server`, threaded, so the pages' server-sent events stream)
and the Celery workers of both pools (`live_workers`, from tests/conftest.py) share the test
database and the MEDIA_ROOT that tests/conftest.py sets, so the signed media URLs the server hands
out point at the files the workers wrote.

Every test gets a fresh browser context; any console error or uncaught page error fails the test.
Screenshots go to test-artifacts/screenshots/<test>-<step>.png (git-ignored), plus <test>-failure.png
when a test fails.
"""

import os
import re
from pathlib import Path

import pytest
from helpers import PASSWORDS
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"

# Debian's Chromium (`apt-get install chromium`; .ci/run installs it when it is missing).
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Playwright adds --headless (headless=True) and a fresh, empty --user-data-dir of its own.
# The background-networking flags keep Chromium from trying hosts this closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def _django_orm_beside_playwright():
    """Playwright's sync API runs its asyncio loop in a greenlet of this thread, so while a browser
    is open Django sees a running event loop and refuses ORM calls from the test and from
    pytest-django's own database flush. Those calls are plain synchronous code: allow them for as
    long as the browser lives (module scope: Playwright stops before other test modules run)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture(scope="module")
def browser(_django_orm_beside_playwright):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's Chromium (apt-get install chromium) "
                    "or set CHROMIUM_PATH; .ci/run installs it")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for stale in SCREENSHOTS.glob("*.png"):  # the folder shows the latest run only
        stale.unlink()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    _wait_for_event_streams()


def _wait_for_event_streams(timeout=30):
    """The live server's threads serving /events/jobs notice a closed page only at their next write
    (a heartbeat at most 10 s later) and hold a database connection until then: let them end, so
    that the test database can be dropped at the end of the session."""
    import threading
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [t for t in threading.enumerate() if "process_request_thread" in t.name and t.is_alive()]:
            return
        time.sleep(0.2)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test that passed but whose pages logged JavaScript errors fails, listing them."""
    result = yield
    errors = getattr(item, "js_errors", None)
    if errors:
        raise AssertionError("JavaScript errors on the page:\n" + "\n".join(errors))
    return result


def _is_external_noise(text):
    """Nothing is reachable but the live server, so only a request that left this machine is noise."""
    return bool(re.search(r"https?://(?!localhost|127\.0\.0\.1|\[::1\])", text)) and "Failed to load" in text


@pytest.fixture
def page(request, live_workers, live_server, browser):
    """A fresh browser context on the live server (real workers running) that records JS errors."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    errors = request.node.js_errors = []
    allowed = request.node.allowed_console_errors = []

    def on_console(message):
        if message.type == "error":
            where = message.location or {}
            text = f"console.error: {message.text} ({where.get('url', '')}:{where.get('lineNumber', '')}) " \
                   f"on {message.page.url if message.page else '?'}"
            if not _is_external_noise(text) and not any(re.search(p, text) for p in allowed):
                errors.append(text)

    def on_web_error(web_error):
        errors.append(f"uncaught: {web_error.error} on {web_error.page.url if web_error.page else '?'}")

    context.on("console", on_console)
    context.on("weberror", on_web_error)
    page = context.new_page()
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        try:
            page.screenshot(path=str(SCREENSHOTS / f"{_slug(request.node.name)}-failure.png"), full_page=True)
        except Exception:  # the page may be gone; the failure itself is what matters
            pass
    context.close()


@pytest.fixture
def allow_console_errors(request, page):
    """allow_console_errors(pattern): console errors matching the regex are expected, not failures (Chromium
    logs every 4xx answer, such as the 400 a test provokes on purpose, as "Failed to load resource")."""
    return request.node.allowed_console_errors.append


def _slug(name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


@pytest.fixture
def screenshot(request, page):
    """screenshot("step") saves the page as test-artifacts/screenshots/<test>-<step>.png;
    screenshot("step", locator) saves just that element."""

    def take(step, element=None):
        path = SCREENSHOTS / f"{_slug(request.node.name)}-{_slug(step)}.png"
        if element is not None:
            element.scroll_into_view_if_needed()
            element.screenshot(path=str(path))
        else:
            page.evaluate("window.scrollTo(0, 0)")  # a sticky header belongs at the top of a full-page shot
            page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def log_in(page, live_server):
    """log_in(user) opens the Workspace, is sent to the real login form at /accounts/login/, signs in
    there and lands back on the Workspace."""

    def sign_in(user):
        page.goto("/")
        page.wait_for_url(re.compile(re.escape(live_server.url) + r"/accounts/login/\?next=/$"))
        form = page.locator("form:has(#id_username)")
        form.locator("#id_username").fill(user.get_username())
        form.locator("#id_password").fill(PASSWORDS[user.get_username()])
        form.locator("button[type=submit]").click()
        page.wait_for_url(f"{live_server.url}/")
        return page

    return sign_in
