"""Browser test plumbing: a real `storeroom serve` (uvicorn and its embedded worker on the
filesystem broker, SQLite, the outbox email backend) and Debian's Chromium driven by
Playwright. Every page a test opens is watched for console errors, uncaught exceptions and CSP
violations; screenshots go to test-artifacts/web/ (git-ignored)."""

import email
import email.policy
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import SERVICES_MODE, TEST_SECRET_KEY
from tests.servers import ServeProcess, free_port, serve

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # never fetch a browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("STOREROOM_TEST_ARTIFACTS", "test-artifacts")) / "web"
PASSWORD = "a-long-password"
TIMEOUT_MS = 20_000
_FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")


def require_browser() -> None:
    """Skip when there is no browser to drive, except where the services are required (CI):
    there a missing browser is a failure."""
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "playwright is not installed (pip install -e '.[dev]')"
    if problem is None and not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    if problem is None:
        return
    if SERVICES_MODE == "required":
        pytest.fail(f"STOREROOM_TEST_SERVICES=required but {problem}")
    pytest.skip(problem)


@dataclass
class Site:
    """The server under test."""

    server: ServeProcess
    workdir: Path

    @property
    def url(self) -> str:
        return self.server.base_url

    @property
    def outbox(self) -> Path:
        return self.workdir / "data" / "outbox"

    def reset_link(self, address: str, *, timeout: float = 15) -> str:
        """The link in the newest password-reset email to `address` (the outbox's .eml files
        are written a moment after the response)."""
        deadline = time.monotonic() + timeout
        while True:
            for path in sorted(self.outbox.glob("*.eml"), reverse=True):
                message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
                if (
                    address not in str(message["To"])
                    or "reset" not in str(message["Subject"]).lower()
                ):
                    continue
                body = message.get_body(preferencelist=("plain",))
                assert body is not None
                found = re.search(r"\S+/reset-password\?token=[\w.\-]+", body.get_content())  # type: ignore[attr-defined]
                assert found, body
                return found[0]
            assert time.monotonic() < deadline, f"no reset email to {address} in {self.outbox}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, migrated_databases: dict[str, str]
) -> Iterator[Site]:
    require_browser()
    workdir = tmp_path_factory.mktemp("web-site")
    database = workdir / "storeroom.db"
    shutil.copy(Path(migrated_databases["sqlite"].split(":///", 1)[1]), database)
    port = free_port()
    env = {
        "STOREROOM_DATABASE_URL": f"sqlite:///{database}",
        "STOREROOM_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "STOREROOM_EMBEDDED_WORKER": "true",
        "STOREROOM_BROKER_URL": "filesystem://",
        "STOREROOM_BROKER_POLLING_INTERVAL_SECONDS": "0.05",
        "STOREROOM_EMAIL_BACKEND": "outbox",
        "STOREROOM_REGISTRATION_MAX_PER_IP": "1000",
        "STOREROOM_SECRET_KEY": TEST_SECRET_KEY,
    }
    with serve(workdir, env, port=port) as server:
        yield Site(server, workdir)


@pytest.fixture(scope="module")
def chromium(site: Site) -> Iterator["Browser"]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    """A browser context (one person's cookies) whose pages are watched."""

    context: "BrowserContext"
    site: Site
    name: str
    problems: list[str] = field(default_factory=list)
    expected_statuses: set[int] = field(default_factory=set)

    def new_page(self) -> "Page":
        page = self.context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        return page

    def _console(self, message: "ConsoleMessage") -> None:
        text = message.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.problems.append(f"CSP violation: {text}")
        elif message.type == "error":
            failed = _FAILED_LOAD.search(text)
            if failed and int(failed[1]) in self.expected_statuses:
                return
            self.problems.append(f"console error: {text} ({message.location})")

    def expect_status(self, *statuses: int) -> None:
        """Statuses this test provokes on purpose (a wrong password's 401, a conflict's 412):
        the browser logs each as a failed load, which is not a fault of the page."""
        self.expected_statuses.update(statuses)

    def screenshot(self, page: "Page", name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{self.name}-{name}.png"), full_page=True)


@pytest.fixture
def tab(chromium: "Browser", site: Site, request: pytest.FixtureRequest) -> Iterator[Tab]:
    context = chromium.new_context(base_url=site.url, accept_downloads=True)
    watched = Tab(context, site, request.node.name.removeprefix("test_"))
    try:
        yield watched
    finally:
        context.close()
    assert watched.problems == [], "\n".join(watched.problems)


# --- what a person does --------------------------------------------------------------------


def unique_email(label: str) -> str:
    return f"{label}-{time.monotonic_ns()}@example.com"


def wait_for_dashboard(page: "Page") -> None:
    page.wait_for_url("**/app*")
    page.locator("body[data-ready=true]").wait_for()


def register(page: "Page", address: str, password: str = PASSWORD) -> None:
    page.goto("/register")
    page.get_by_label("Email").fill(address)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Create account").click()
    wait_for_dashboard(page)


def sign_in(
    page: "Page", address: str, password: str = PASSWORD, *, open_page: bool = True
) -> None:
    if open_page:
        page.goto("/login")
    page.get_by_label("Email").fill(address)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def sign_out(page: "Page") -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login?notice=signed-out")


def add_item(page: "Page", name: str, price: str, tags: str = "") -> None:
    form = page.locator("#item-create")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Price").fill(price)
    form.get_by_label("Tags").fill(tags)
    form.get_by_role("button", name="Add item").click()
    page.locator("#items-body tr", has_text=name).wait_for()
