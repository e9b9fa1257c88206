"""Every demo user signs in and sees the navigation of their role."""

import pytest
from django.core.management import call_command
from django.urls import reverse

# username -> nav links that must show (True) or must not (False)
EXPECTED = {
    "rita": {"Approvals": False, "Ops console": False, "Balance": False, "Admin": False},
    "paul": {"Approvals": False, "Ops console": False, "Balance": False, "Admin": False},
    "rlead": {"Approvals": True, "Ops console": False, "Balance": False, "Admin": False},
    "alead": {"Approvals": True, "Ops console": False, "Balance": False, "Admin": False},
    "exec": {"Approvals": True, "Ops console": False, "Balance": True, "Admin": False},
    "ops": {"Approvals": False, "Ops console": True, "Balance": False, "Admin": False},
    "admin": {"Approvals": False, "Ops console": False, "Balance": False, "Admin": True},
}


@pytest.fixture
def demo(transactional_db, settings):
    settings.ALLOTMENT = {**settings.ALLOTMENT, "DEMO": True}
    call_command("seed_demo")


def nav_of(html: str) -> str:
    start = html.index('<nav class="mainnav"')
    return html[start : html.index("</nav>", start)]


@pytest.mark.parametrize("username", sorted(EXPECTED))
def test_demo_user_signs_in_and_sees_role_navigation(client, demo, username):
    # when the demo user signs in with the password "demo"
    response = client.post(reverse("login"), {"username": username, "password": "demo"})
    # then they land on the overview
    assert response.status_code == 302
    assert response["Location"] == reverse("overview")
    page = client.get(reverse("overview"))
    assert page.status_code == 200
    nav = nav_of(page.content.decode())
    for always in ("Overview", "Requests", "Pools", "Projects"):
        assert f">{always}</a>" in nav
    for label, shown in EXPECTED[username].items():
        assert (f">{label}</a>" in nav) is shown, (
            f"{username}: {label} should be {'shown' if shown else 'hidden'}"
        )


def test_wrong_password_is_refused_with_a_message(client, demo):
    response = client.post(reverse("login"), {"username": "rita", "password": "nope"})
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert "_auth_user_id" not in client.session


def test_pages_need_sign_in(client, demo):
    response = client.get(reverse("overview"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_sign_out_is_a_post_and_ends_the_session(client, demo):
    client.post(reverse("login"), {"username": "rita", "password": "demo"})
    assert client.get(reverse("logout")).status_code == 405
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert client.get(reverse("overview")).status_code == 302


def test_admin_shows_audit_and_ledger_read_only(client, demo):
    client.post(reverse("login"), {"username": "admin", "password": "demo"})
    assert client.get(reverse("admin:index")).status_code == 200
    assert client.get(reverse("admin:audit_auditevent_changelist")).status_code == 200
    assert client.get(reverse("admin:audit_auditevent_add")).status_code == 403
    assert client.get(reverse("admin:allocator_ledgerentry_changelist")).status_code == 200
    assert client.get(reverse("admin:allocator_ledgerentry_add")).status_code == 403


def test_researcher_cannot_reach_admin(client, demo):
    client.post(reverse("login"), {"username": "rita", "password": "demo"})
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302  # to the admin's own login


def test_static_assets_are_served_locally(client, demo):
    client.post(reverse("login"), {"username": "rita", "password": "demo"})
    html = client.get(reverse("overview")).content.decode()
    assert "http://" not in html.replace("http://testserver", "")
    assert "https://" not in html


@pytest.mark.parametrize(
    "username,url,current",
    [
        ("rlead", "/requests/inbox/", "Approvals"),
        ("rita", "/requests/", "Requests"),
        ("rita", "/requests/new/", "Requests"),
        ("rita", "/pools/", "Pools"),
        ("ops", "/ops/", "Ops console"),
        ("exec", "/balance/", "Balance"),
        ("rita", "/", "Overview"),
    ],
)
def test_exactly_one_section_is_current(client, demo, username, url, current):
    client.post(reverse("login"), {"username": username, "password": "demo"})
    nav = nav_of(client.get(url).content.decode())
    marked = [
        chunk.split(">", 1)[1].split("<", 1)[0]
        for chunk in nav.split("<a ")[1:]
        if 'aria-current="page"' in chunk
    ]
    assert marked == [current]
