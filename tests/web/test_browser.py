"""The web UI in a real browser (headless Chromium) against a real server and job worker: what
a person does, end to end, with no console error or CSP violation on any page."""

import csv
import io
import re

import httpx
from playwright.sync_api import expect

from tests.web.conftest import (
    PASSWORD,
    Site,
    Tab,
    add_item,
    register,
    sign_in,
    sign_out,
    unique_email,
    wait_for_dashboard,
)


def test_register_sign_out_and_sign_in_again(tab: Tab) -> None:
    page = tab.new_page()
    address = unique_email("reg")
    page.goto("/register")
    tab.screenshot(page, "register")
    register(page, address)
    expect(page.locator(".who")).to_have_text(address)
    expect(page.locator("#items-empty")).to_be_visible()
    tab.screenshot(page, "dashboard-empty")

    sign_out(page)
    expect(page.get_by_role("status")).to_contain_text("signed out")
    page.goto("/app")  # the session is gone: back to the sign-in page
    page.wait_for_url("**/login")
    tab.screenshot(page, "login")

    sign_in(page, address)
    wait_for_dashboard(page)
    expect(page.locator(".who")).to_have_text(address)


def test_sign_in_returns_to_the_page_asked_for(tab: Tab) -> None:
    page = tab.new_page()
    address = unique_email("next")
    register(page, address)
    sign_out(page)
    page.goto("/app/password")
    page.wait_for_url("**/login?next=%2Fapp%2Fpassword")
    sign_in(page, address, open_page=False)
    page.wait_for_url("**/app/password")
    expect(page.get_by_role("heading", name="Change your password")).to_be_visible()
    tab.screenshot(page, "password")


def test_a_wrong_password_shows_the_message(tab: Tab) -> None:
    tab.expect_status(401)
    page = tab.new_page()
    address = unique_email("wrong")
    register(page, address)
    sign_out(page)
    sign_in(page, address, "not-the-password")
    expect(page.get_by_role("alert")).to_have_text("Incorrect email or password")
    expect(page.get_by_label("Email")).to_have_value(address)
    tab.screenshot(page, "login-wrong-password")


def test_create_and_edit_an_item_and_a_stale_edit_shows_the_conflict(tab: Tab) -> None:
    tab.expect_status(412)
    first = tab.new_page()
    register(first, unique_email("edit"))
    add_item(first, "Espresso machine", "649.90", "kitchen, coffee")
    row = first.locator("#items-body tr", has_text="Espresso machine")
    expect(row).to_contain_text("649.90")
    expect(row).to_contain_text("coffee")

    second = tab.new_page()  # another tab of the same browser: the same session
    second.goto("/app")
    wait_for_dashboard(second)
    for page in (first, second):
        page.get_by_role("button", name="Edit Espresso machine").click()
        expect(page.locator("#item-editor")).to_be_visible()

    first.locator("#edit-price").fill("599.00")
    first.locator("#item-editor").get_by_role("button", name="Save").click()
    expect(first.locator("#items-body tr", has_text="Espresso machine")).to_contain_text("599.00")

    second.locator("#edit-price").fill("700.00")
    second.locator("#item-editor").get_by_role("button", name="Save").click()
    expect(second.locator("#edit-error")).to_contain_text("changed somewhere else")
    tab.screenshot(second, "item-conflict")
    second.get_by_role("button", name="Load the latest version").click()
    expect(second.locator("#edit-price")).to_have_value("599.00")
    second.locator("#edit-price").fill("700.00")
    second.locator("#item-editor").get_by_role("button", name="Save").click()
    expect(second.locator("#items-body tr", has_text="Espresso machine")).to_contain_text("700.00")


def test_an_invalid_item_shows_the_error_next_to_the_field(tab: Tab) -> None:
    page = tab.new_page()
    register(page, unique_email("invalid"))
    form = page.locator("#item-create")
    form.get_by_label("Name").fill("Lamp")
    form.get_by_label("Price").fill("12.505")
    tab.expect_status(422)
    form.get_by_role("button", name="Add item").click()
    expect(page.locator("#create-price-error")).to_be_visible()
    expect(page.locator("#create-price")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#items-empty")).to_be_visible()


def _csv(rows: int) -> bytes:
    lines = ["name,price,tags"] + [f"Imported {n:05d},{n % 100}.25,bulk" for n in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def test_upload_a_csv_and_import_it_with_live_progress(tab: Tab) -> None:
    page = tab.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(f"{request.method} {request.url}"))
    register(page, unique_email("import"))
    page.get_by_label("File to upload").set_input_files(
        files=[{"name": "stock.csv", "mimeType": "text/csv", "buffer": _csv(2500)}]
    )
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator("#upload-progress")).to_have_attribute("value", "100")
    file_row = page.locator("#files-list li", has_text="stock.csv")
    expect(file_row).to_be_visible()

    file_row.get_by_role("button", name="Import items from stock.csv").click()
    job = page.locator("#jobs-list li").first
    expect(job).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(job.locator("progress")).to_have_attribute("value", "100")
    expect(job.locator(".job-percent")).to_have_text("100 %")
    expect(job).to_contain_text("2500 items imported")
    expect(page.locator("#items-range")).to_have_text("1\N{EN DASH}20 of 2500")
    # The progress came over the live events stream, not by polling the job.
    assert any(line.endswith("/api/v1/events") for line in requested), requested
    assert not [line for line in requested if re.search(r"GET .*/api/v1/jobs/[0-9a-f-]+$", line)]
    expect(page.locator("#items-body tr")).to_have_count(20)
    tab.screenshot(page, "dashboard-imported")

    page.get_by_label("Search").fill("Imported 0001")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#items-range")).to_have_text("1\N{EN DASH}10 of 10")
    expect(page.get_by_role("button", name="Next")).to_be_disabled()


def test_export_and_download(tab: Tab) -> None:
    page = tab.new_page()
    register(page, unique_email("export"))
    add_item(page, "Lamp", "12.50", "home")
    add_item(page, "=SUM(A1)", "3", "")

    page.get_by_role("button", name="Export items as CSV").click()
    job = page.locator("#jobs-list li").first
    expect(job).to_have_attribute("data-status", "succeeded", timeout=60_000)
    with page.expect_download() as download_info:
        job.get_by_role("link", name=re.compile("Download")).click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(download.path().read_text(encoding="utf-8"))))
    assert sorted(row["name"] for row in rows) == ["'=SUM(A1)", "Lamp"]
    # The export's file is listed with the uploads, to download again.
    expect(page.locator("#files-list li", has_text=".csv")).to_have_count(1)

    with page.expect_download() as direct:
        page.locator("#export-now-csv").click()
    assert "Lamp" in direct.value.path().read_text(encoding="utf-8")


def test_create_and_revoke_an_api_key(tab: Tab, site: Site) -> None:
    page = tab.new_page()
    address = unique_email("keys")
    register(page, address)
    expect(page.locator("#keys-empty")).to_be_visible()
    page.get_by_label("Name", exact=True).last.fill("backup script")
    page.locator("#key-create").get_by_role("button", name="Create key").click()
    key = page.locator("#key-value")
    expect(key).to_have_text(re.compile(r"^sr_"))
    secret = key.inner_text()
    expect(page.locator("#keys-list li", has_text="backup script")).to_be_visible()
    tab.screenshot(page, "api-key-created")
    me = httpx.get(f"{site.url}/api/v1/users/me", headers={"X-API-Key": secret})
    assert me.status_code == 200 and me.json()["email"] == address

    page.get_by_role("button", name="Revoke backup script").click()
    expect(page.locator("#keys-empty")).to_be_visible()
    expect(page.locator("#key-created")).to_be_hidden()
    assert (
        httpx.get(f"{site.url}/api/v1/users/me", headers={"X-API-Key": secret}).status_code == 401
    )


def test_reset_a_forgotten_password_from_the_email_link(tab: Tab, site: Site) -> None:
    tab.expect_status(400)
    page = tab.new_page()
    address = unique_email("forgot")
    register(page, address)
    sign_out(page)
    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label("Email").fill(address)
    page.get_by_role("button", name="Send reset link").click()
    expect(page.get_by_role("status")).to_contain_text("on its way")
    tab.screenshot(page, "forgot-password-sent")

    link = site.reset_link(address)
    assert link.startswith(f"{site.url}/reset-password?token=")
    page.goto(link)
    tab.screenshot(page, "reset-password")
    page.get_by_label("New password").fill("a-brand-new-password")
    page.get_by_role("button", name="Change password").click()
    page.wait_for_url("**/login?notice=password-reset")
    expect(page.get_by_role("status")).to_contain_text("password was changed")
    sign_in(page, address, "a-brand-new-password")
    wait_for_dashboard(page)

    page.goto(link)  # used once: it works no more
    expect(page.get_by_role("alert")).to_contain_text("already been used")
    tab.screenshot(page, "reset-password-used")


def test_changing_the_password_keeps_this_browser_and_ends_the_others(tab: Tab) -> None:
    page = tab.new_page()
    address = unique_email("change")
    register(page, address)
    browser = tab.context.browser
    assert browser is not None
    other = browser.new_context(base_url=tab.site.url)
    try:
        elsewhere = other.new_page()
        sign_in(elsewhere, address)
        wait_for_dashboard(elsewhere)

        page.goto("/app/password")
        page.get_by_label("Current password").fill(PASSWORD)
        page.get_by_label("New password").fill("another-long-password")
        page.get_by_role("button", name="Change password").click()
        wait_for_dashboard(page)
        expect(page.get_by_role("status").first).to_contain_text("password was changed")

        elsewhere.goto("/app")
        elsewhere.wait_for_url("**/login")
    finally:
        other.close()


def test_a_cross_site_form_post_with_the_cookie_is_refused(tab: Tab, site: Site) -> None:
    tab.expect_status(403)
    page = tab.new_page()
    register(page, unique_email("csrf"))
    # Another origin on the same site (another port of 127.0.0.1): SameSite=Lax still sends
    # the cookie with its top-level form POST, so the CSRF check is what stops it.
    attacker = f"http://127.0.0.1:{site.server.port + 1}/prize"
    page.route(
        attacker,
        lambda route: route.fulfill(
            content_type="text/html",
            body=f"""<!doctype html><title>Win</title>
            <form method="post" action="{site.url}/api/v1/items">
              <input name="name" value="Planted"><input name="price" value="1">
              <button>Claim your prize</button></form>""",
        ),
    )
    page.goto(attacker)
    with page.expect_response(f"{site.url}/api/v1/items") as answer:
        page.get_by_role("button", name="Claim your prize").click()
    assert answer.value.status == 403
    assert answer.value.json()["code"] == "csrf_rejected"

    page.goto("/app")
    wait_for_dashboard(page)
    expect(page.locator("#items-empty")).to_be_visible()


def test_every_page_renders_without_console_errors_on_a_phone(tab: Tab) -> None:
    tab.expect_status(400)  # a reset link without a token
    page = tab.new_page()
    page.set_viewport_size({"width": 375, "height": 740})
    for path, name in [
        ("/login", "login"),
        ("/register", "register"),
        ("/forgot-password", "forgot-password"),
        ("/reset-password", "reset-password-no-token"),
    ]:
        page.goto(path)
        expect(page.locator("h1")).to_be_visible()
        tab.screenshot(page, f"phone-{name}")
    register(page, unique_email("phone"))
    add_item(page, "Phone-width lamp", "5")
    tab.screenshot(page, "phone-dashboard")
    page.goto("/app/password")
    tab.screenshot(page, "phone-password")
    # Keyboard: the first Tab reaches the skip link, and it leads to the content.
    page.goto("/login")
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
