"""Browser tests: Playwright drives Debian's headless Chromium (/usr/bin/chromium, never a
browser download) against pytest-django's live server. One browser for the whole package; each
persona gets its own signed-in context. Every page visited is screenshotted into
test-output/screenshots/<test>/ and checked for console errors (CSP violations are console errors).

The live server runs in a thread of this process and the Celery worker in a subprocess on the same
test database, so tests here use the transactional database (data is committed, both can see it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

# Playwright's sync API keeps an event loop running in this thread; the ORM calls our tests make
# between page actions would otherwise be refused as "async unsafe" (ENV-NOTES.md section 5).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 860}


def chromium_path() -> str | None:
    """Debian's Chromium, or the binary ALLOTMENT_CHROMIUM names; None when there is none."""
    if os.environ.get("ALLOTMENT_CHROMIUM"):
        candidate = os.environ["ALLOTMENT_CHROMIUM"]
        return candidate if Path(candidate).exists() else None
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    reason = None
    if chromium_path() is None:
        reason = (
            "browser tests skipped: no Chromium at /usr/bin/chromium (or ALLOTMENT_CHROMIUM), "
            "and it could not be installed: `python3 dev.py test` installs Debian's chromium "
            "with apt when run as root"
        )
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "browser tests skipped: the playwright package is not installed ([test] extra)"
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.browser)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="package")
def chromium():
    """One headless Chromium for every browser test; Playwright stops after the package so its
    event loop does not outlive these tests."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    yield browser
    browser.close()
    pw.stop()


@dataclass
class Visit:
    """One page as the browser saw it."""

    url: str
    status: int | None
    shot: Path


@dataclass
class Browse:
    """A browser context (one persona, one viewport) and the page it drives. `visit` loads a URL,
    waits for it and takes a screenshot; console errors of every page land in `errors()`."""

    context: object
    page: object
    base_url: str
    shots_dir: Path
    label: str
    counter: list = field(default_factory=lambda: [0])
    console_errors: list = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base_url + path

    def shot(self, name: str) -> Path:
        self.counter[0] += 1
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        path = self.shots_dir / f"{self.counter[0]:02d}-{self.label}-{slug}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def visit(self, path: str, name: str | None = None) -> Visit:
        response = self.page.goto(self.url(path), wait_until="load")
        shot = self.shot(name or path)
        return Visit(url=self.page.url, status=response.status if response else None, shot=shot)

    def errors(self) -> list[str]:
        return list(self.console_errors)


@pytest.fixture
def shots_dir(request):
    path = SHOTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browse(request, chromium, live_server, shots_dir, transactional_db):
    """browse(user=None, viewport=DESKTOP, label=None) -> Browse: a context signed in as `user`
    (by session cookie; the sign-in form has its own test) at the given viewport. When the test
    fails, each open page is screenshotted once more as it was at the failure."""
    sessions = []
    counter = [0]  # screenshots of one test are numbered in the order they were taken

    def make(user=None, viewport=DESKTOP, label=None) -> Browse:
        context = chromium.new_context(viewport=viewport, base_url=live_server.url)
        context.set_default_timeout(10_000)
        if user is not None:
            client = Client()
            client.force_login(user)
            cookie = client.cookies[settings.SESSION_COOKIE_NAME]
            context.add_cookies(
                [{"name": cookie.key, "value": cookie.value, "url": live_server.url}]
            )
        page = context.new_page()
        name = label or (user.get_username() if user else "anonymous")
        session = Browse(
            context=context,
            page=page,
            base_url=live_server.url,
            shots_dir=shots_dir,
            label=f"{name}-{viewport['width']}",
            counter=counter,
        )

        def on_console(msg):
            # A page answered with an error status (a 404 page, a form sent back with a 400) is
            # reported as a failed load of the document itself: tests check that status directly.
            document = msg.text.startswith("Failed to load resource") and (
                msg.location.get("url") == page.url
            )
            if msg.type == "error" and not document:
                session.console_errors.append(f"{page.url}: {msg.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: session.console_errors.append(f"{page.url}: {exc}"))
        sessions.append(session)
        return session

    yield make
    report = getattr(request.node, "rep_call", None)
    for session in sessions:
        if report is not None and report.failed:
            with contextlib.suppress(Exception):  # the page may be gone; the report matters more
                session.shot("at failure")
        session.context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report
