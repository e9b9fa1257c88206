"""Pages send a strict Content-Security-Policy and the usual hardening headers."""

import pytest
from django.urls import reverse


@pytest.mark.parametrize("url_name", ["login", "overview"])
def test_pages_send_strict_csp(client, requester, url_name):
    client.force_login(requester)
    response = client.get(reverse(url_name))
    csp = response["Content-Security-Policy"]
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert "'self'" in script_src
    assert "unsafe-inline" not in script_src and "unsafe-eval" not in script_src
    assert "frame-ancestors 'none'" in csp
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"


def test_templates_have_no_inline_script(client, requester):
    client.force_login(requester)
    html = client.get(reverse("overview")).content.decode()
    for chunk in html.split("<script")[1:]:
        tag = chunk.split(">", 1)[0]
        assert "src=" in tag, f"inline script: <script{tag}>"
