"""Signing in through the real form: each role lands on its home and sees only its navigation."""

import pytest
from playwright.sync_api import expect

from workbench.models import AuditEntry

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

NO_ROLE = "No role yet — ask your CCO"
WRONG_PASSWORD = (
    "Please enter a correct username and password. Note that both fields may be case-sensitive."
)


def main_nav(page):
    return page.get_by_role("navigation", name="Main").get_by_role("link")


@pytest.mark.parametrize(
    ("role", "username", "home", "heading", "nav"),
    [
        ("agent", "ada", "/cases/", "Case queue",
         ["Case queue", "Customers", "API", "Outbox", "Notifications"]),
        ("supervisor", "sam", "/cases/", "Case queue",
         ["Case queue", "Customers", "API", "Reports", "Outbox", "Notifications"]),
        # Marketers are never @mentioned (they may not read private notes): no notifications.
        ("marketer", "mia", "/campaigns/", "Campaigns",
         ["Customers", "Campaigns", "API", "Outbox"]),
        ("cco", "cleo", "/console/", "Console",
         ["Case queue", "Customers", "Campaigns", "Console", "API", "Outbox", "Notifications"]),
    ],
)  # fmt: skip
def test_each_role_signs_in_through_the_form_and_lands_on_its_home_with_its_navigation(
    page, sign_in, live_server_url, make_user, role, username, home, heading, nav
):
    make_user(role, username=username)

    response = sign_in(page, username)

    assert response.status == 200
    expect(page).to_have_url(f"{live_server_url}{home}")
    expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    expect(main_nav(page)).to_have_text(nav)
    expect(main_nav(page).get_by_text(heading, exact=True)).to_have_attribute(
        "aria-current", "page"
    )
    expect(page.locator(".who .badge")).to_have_text([role])


def test_user_without_role_is_told_to_ask_the_cco_on_every_page(
    page, sign_in, live_server_url, make_user
):
    make_user(None, username="newbie")

    response = sign_in(page, "newbie")

    assert response.status == 403
    expect(page).to_have_url(f"{live_server_url}/")
    expect(page.get_by_role("heading", level=1)).to_have_text(NO_ROLE)
    expect(main_nav(page)).to_have_count(0)
    expect(page.locator(".who .badge")).to_have_text(["no role"])
    for url in ("/cases/", "/console/"):
        response = page.goto(url)
        assert response.status == 403
        expect(page).to_have_url(f"{live_server_url}{url}")
        expect(page.get_by_role("heading", level=1)).to_have_text(NO_ROLE)


def test_wrong_password_shows_the_error_and_stays_on_the_sign_in_page(
    page, sign_in, live_server_url, make_user
):
    make_user("agent", username="ada")

    response = sign_in(page, "ada", password="not the password")

    assert response.status == 200
    expect(page).to_have_url(f"{live_server_url}/accounts/login/")
    expect(page.get_by_role("alert")).to_have_text(WRONG_PASSWORD)
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Workbench")
    expect(page.get_by_label("Username")).to_have_value("ada")
    expect(page.get_by_label("Password")).to_have_value("")
    assert "sessionid" not in {cookie["name"] for cookie in page.context.cookies()}
    assert AuditEntry.objects.filter(action="sign_in").count() == 0
