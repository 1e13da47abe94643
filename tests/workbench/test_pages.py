"""Sign-in, homes by role, the navigation bar, and the no-role page refusing every URL."""

import pytest
from django.urls import reverse

from tests.factories import PASSWORD


def test_signed_out_visitor_is_sent_to_sign_in_with_next(client, db):
    response = client.get("/cases/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/cases/"


def test_sign_in_page_has_csrf_and_the_form(client, db):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert 'name="csrfmiddlewaretoken"' in response.text
    assert 'autocomplete="current-password"' in response.text


@pytest.mark.parametrize(
    ("role", "home"),
    [("agent", "/cases/"), ("supervisor", "/cases/"), ("marketer", "/campaigns/"),
     ("cco", "/console/")],
)  # fmt: skip
def test_each_role_lands_on_its_home_after_sign_in(client, make_user, role, home):
    user = make_user(role)
    response = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302
    assert client.get(response["Location"])["Location"] == home
    assert client.get(home).status_code == 200


@pytest.mark.parametrize(
    ("role", "shown", "hidden"),
    [
        ("agent", ["Case queue", "Customers"], ["Campaigns", "Console"]),
        ("supervisor", ["Case queue", "Customers"], ["Campaigns", "Console"]),
        ("marketer", ["Customers", "Campaigns"], ["Case queue", "Console"]),
        ("cco", ["Case queue", "Customers", "Campaigns", "Console"], []),
    ],
)
def test_navigation_shows_only_what_the_role_may_use(client_for, make_user, role, shown, hidden):
    client = client_for(make_user(role))
    home = client.get(reverse("home"), follow=True)
    nav = home.text.split('<nav aria-label="Main">')[1].split("</nav>")[0]
    for label in shown:
        assert f">{label}</a>" in nav
    for label in hidden:
        assert f">{label}</a>" not in nav


@pytest.mark.parametrize(
    ("role", "url", "status"),
    [
        ("agent", "/campaigns/", 403),
        ("agent", "/console/", 403),
        ("supervisor", "/console/", 403),
        ("marketer", "/cases/", 403),
        ("marketer", "/console/", 403),
        ("marketer", "/customers/", 200),
        ("cco", "/cases/", 200),
        ("cco", "/campaigns/", 200),
    ],
)
def test_pages_refuse_roles_that_may_not_open_them(client_for, make_user, role, url, status):
    response = client_for(make_user(role)).get(url)
    assert response.status_code == status
    if status == 403:
        assert "Your role cannot open this page" in response.text


@pytest.mark.parametrize("url", ["/", "/cases/", "/campaigns/", "/console/", "/customers/"])
def test_user_without_role_sees_the_no_role_page_everywhere(client_for, no_role_user, url):
    response = client_for(no_role_user).get(url)
    assert response.status_code == 403
    assert "No role yet — ask your CCO" in response.text
    assert '<nav aria-label="Main">\n      <ul>\n        \n      </ul>' in response.text


def test_user_without_role_is_refused_by_the_api(client_for, no_role_user):
    response = client_for(no_role_user).get("/api/me/")
    assert response.status_code == 403


def test_empty_homes_say_what_will_appear_and_how(client_for, agent, marketer):
    queue = client_for(agent).get("/cases/").text
    assert "No cases yet" in queue
    assert "Cases open by themselves when a customer writes in" in queue
    campaigns = client_for(marketer).get("/campaigns/").text
    assert "No campaigns yet" in campaigns
    assert "preflight shows who will receive it" in campaigns


def test_sign_out_is_a_post_and_ends_the_session(client_for, agent):
    client = client_for(agent)
    assert client.get("/accounts/logout/").status_code == 405
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert client.get("/cases/").status_code == 302


def test_five_wrong_passwords_lock_the_account_with_a_clear_page(client, agent):
    for _ in range(5):
        client.post("/accounts/login/", {"username": "ada", "password": "wrong"})
    response = client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})
    assert response.status_code == 429
    assert "Too many sign-in attempts" in response.text
    assert "_auth_user_id" not in client.session
