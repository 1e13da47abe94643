"""The role predicates: each role reads and works exactly what DESIGN.md's table says."""

import pytest

from workbench import roles

# role → (read cases, work cases, read campaigns, edit campaigns, read customers, console)
EXPECTED = {
    "agent": (True, True, False, False, True, False),
    "supervisor": (True, True, False, False, True, False),
    "marketer": (False, False, True, True, True, False),
    "cco": (True, False, True, False, True, True),
    None: (False, False, False, False, False, False),
}
PREDICATES = (
    roles.can_read_cases,
    roles.can_work_cases,
    roles.can_read_campaigns,
    roles.can_edit_campaigns,
    roles.can_read_customers,
    roles.can_open_console,
)


@pytest.mark.parametrize("role", list(EXPECTED))
def test_each_role_may_do_exactly_what_the_design_says(make_user, role):
    user = make_user(role)
    assert tuple(bool(p(user)) for p in PREDICATES) == EXPECTED[role]


@pytest.mark.parametrize(
    ("role", "home"),
    [("agent", "cases:queue"), ("supervisor", "cases:queue"), ("marketer", "campaigns:list"),
     ("cco", "console:home"), (None, None)],
)  # fmt: skip
def test_each_role_has_its_own_home(make_user, role, home):
    assert roles.home_url_name(make_user(role)) == home


def test_anonymous_user_holds_no_role():
    from django.contrib.auth.models import AnonymousUser

    anonymous = AnonymousUser()
    assert roles.roles_of(anonymous) == frozenset()
    assert not roles.has_role(anonymous)


def test_deactivated_user_cannot_sign_in(make_user, client):
    user = make_user("agent", is_active=False)
    response = client.post(
        "/accounts/login/", {"username": user.username, "password": "correct horse battery staple"}
    )
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.text
    assert "_auth_user_id" not in client.session
