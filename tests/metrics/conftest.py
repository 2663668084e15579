"""Metrics tests: apps with STOREROOM_METRICS_ENABLED, and /metrics read by prometheus-client's
own parser. Values are per test process and shared by every app built in it, so tests compare
a scrape before and after what they do."""

from collections.abc import Mapping

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from storeroom.core.config import Settings

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"metrics_enabled": True})


def parse(text: str) -> Series:
    """Every sample of an exposition: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: TestClient | httpx.Client, headers: Mapping[str, str] | None = None) -> Series:
    response = client.get("/metrics", headers=dict(headers or {}))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)
