"""Email templates: HTML parts escape what they are given; plain-text parts keep it as is."""

from storeroom.notifications import service as notifications_service

HOSTILE = '<script>alert("x")</script>'


def test_html_template_escapes_its_values() -> None:
    html = notifications_service.render(
        "password_reset.html",
        subject="Reset",
        public_url="https://storeroom.test",
        email=HOSTILE,
        reset_url='https://storeroom.test/reset-password?token=a"b',
        valid_minutes=60,
    )
    assert HOSTILE not in html
    assert "&lt;script&gt;" in html
    assert 'token=a&#34;b"' in html


def test_text_template_is_not_html_escaped() -> None:
    text = notifications_service.render(
        "welcome.txt", subject="Welcome", public_url="https://storeroom.test", email=HOSTILE
    )
    assert HOSTILE in text
