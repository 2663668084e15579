"""The documentation pages: /docs and /redoc load everything from Storeroom itself."""

import re

import pytest
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from storeroom.main import create_app

PAGES = ["/docs", "/redoc"]
CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


def _referenced_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', html)


@pytest.mark.parametrize("page", PAGES)
def test_docs_page_names_no_other_host(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert _referenced_urls(response.text), "the page loads its viewer from somewhere"
    for url in _referenced_urls(response.text):
        assert url.startswith("/") and not url.startswith("//"), url
    # Nor any absolute URL elsewhere: Swagger UI's validator badge, web fonts, a CDN.
    assert not re.search(r"https?://", response.text), response.text
    assert "cdn.jsdelivr.net" not in response.text


@pytest.mark.parametrize("page", PAGES)
def test_every_asset_a_docs_page_references_is_served_here(client: TestClient, page: str) -> None:
    urls = _referenced_urls(client.get(page).text)
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        expected = next(types for suffix, types in CONTENT_TYPES.items() if url.endswith(suffix))
        assert asset.headers["content-type"].startswith(expected), (url, asset.headers)
        assert len(asset.content) > 1000, url


def test_docs_do_not_persist_authorization_by_default(client: TestClient) -> None:
    assert "persistAuthorization" not in client.get("/docs").text


def test_docs_persist_authorization_when_the_setting_asks(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"docs_persist_authorization": True}))
    with TestClient(app) as client:
        assert '"persistAuthorization": true' in client.get("/docs").text


def test_swagger_ui_oauth2_redirect_page_is_served(client: TestClient) -> None:
    docs = client.get("/docs").text
    redirect_url = re.search(r"oauth2RedirectUrl: window\.location\.origin \+ '([^']+)'", docs)
    assert redirect_url is not None, docs
    response = client.get(redirect_url.group(1))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swaggerUIRedirectOauth2" in response.text
