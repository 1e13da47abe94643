"""People: the CCO invites (a one-time set-password link), assigns roles and queues, deactivates;
nobody changes their own role or deactivates themselves; every change is audited."""

import pytest

from tests.cases.factories import QueueFactory
from workbench.models import AuditEntry, User

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer"])
def test_people_pages_refuse_other_roles_and_change_nothing(client_for, make_user, agent, role):
    client = client_for(make_user(role))
    assert client.get("/console/people/").status_code == 403
    assert client.get("/console/people/invite/").status_code == 403
    response = client.post(
        "/console/people/invite/",
        {"username": "sneaky", "email": "s@example.test", "roles": ["cco"]},
    )
    assert response.status_code == 403
    assert client.post(f"/console/people/{agent.pk}/", {"roles": ["cco"]}).status_code == 403
    assert client.post(f"/console/people/{agent.pk}/deactivate/").status_code == 403
    assert not User.objects.filter(username="sneaky").exists()
    agent.refresh_from_db()
    assert agent.is_active
    assert list(agent.groups.values_list("name", flat=True)) == ["agent"]


def test_invite_creates_a_user_with_a_one_time_link_and_audits(client, client_for, cco, mailoutbox):
    billing = QueueFactory(name="Billing")
    response = client_for(cco).post(
        "/console/people/invite/",
        {
            "username": "nina",
            "email": "nina@example.test",
            "first_name": "Nina",
            "last_name": "Park",
            "roles": ["agent"],
            "queues": [billing.pk],
        },
    )
    assert response.status_code == 200
    nina = User.objects.get(username="nina")
    assert not nina.has_usable_password()
    assert list(nina.groups.values_list("name", flat=True)) == ["agent"]
    assert list(nina.queues.all()) == [billing]
    link = response.text.split('data-testid="invite-link">')[1].split("<")[0]
    assert link.startswith("http://testserver/accounts/reset/")
    [mail] = mailoutbox
    assert mail.to == ["nina@example.test"]
    assert link in mail.body
    [entry] = AuditEntry.objects.filter(action="user.invited")
    assert entry.details == {"roles": ["agent"], "queues": ["Billing"]}

    # The link sets a password once, then is void.
    client.logout()
    path = link.removeprefix("http://testserver")
    form_page = client.get(path, follow=True)
    assert "Set your password" in form_page.text
    set_url = form_page.redirect_chain[-1][0] if form_page.redirect_chain else path
    done = client.post(
        set_url,
        {"new_password1": "a long new passphrase 42", "new_password2": "a long new passphrase 42"},
    )
    assert done.status_code == 302
    nina.refresh_from_db()
    assert nina.check_password("a long new passphrase 42")
    assert "has been used or has expired" in client.get(path, follow=True).text


def test_invite_refuses_a_taken_username_and_a_missing_role(client_for, cco, agent):
    response = client_for(cco).post(
        "/console/people/invite/", {"username": "ADA", "email": "x@example.test"}
    )
    assert response.status_code == 400
    assert "Someone already has this username." in response.text
    assert "This field is required." in response.text
    assert User.objects.count() == 2


def test_assigning_roles_and_queues_is_audited_with_before_and_after(client_for, cco, agent):
    billing = QueueFactory(name="Billing")
    response = client_for(cco).post(
        f"/console/people/{agent.pk}/", {"roles": ["supervisor"], "queues": [billing.pk]}
    )
    assert response.status_code == 302
    assert list(agent.groups.values_list("name", flat=True)) == ["supervisor"]
    assert list(agent.queues.all()) == [billing]
    [entry] = AuditEntry.objects.filter(action="user.access_changed")
    assert entry.details == {
        "roles": {"before": ["agent"], "after": ["supervisor"]},
        "queues": {"before": [], "after": ["Billing"]},
    }


def test_nobody_changes_their_own_role_but_may_change_their_queues(client_for, cco):
    client = client_for(cco)
    response = client.post(f"/console/people/{cco.pk}/", {"roles": ["agent"]})
    assert response.status_code == 403
    assert "You cannot change your own role." in response.text
    assert list(cco.groups.values_list("name", flat=True)) == ["cco"]
    billing = QueueFactory(name="Billing")
    response = client.post(f"/console/people/{cco.pk}/", {"roles": ["cco"], "queues": [billing.pk]})
    assert response.status_code == 302
    assert list(cco.queues.all()) == [billing]
    assert not AuditEntry.objects.filter(
        action="user.access_changed", details__has_key="roles"
    ).exists()


def test_deactivating_asks_first_then_blocks_sign_in(client, client_for, cco, agent):
    from tests.factories import PASSWORD

    staff = client_for(cco)
    confirm = staff.get(f"/console/people/{agent.pk}/deactivate/")
    assert "will no longer be able to sign in" in confirm.text
    agent.refresh_from_db()
    assert agent.is_active
    assert staff.post(f"/console/people/{agent.pk}/deactivate/").status_code == 302
    agent.refresh_from_db()
    assert not agent.is_active
    assert (
        AuditEntry.objects.filter(action="user.deactivated", target_id=str(agent.pk)).count() == 1
    )
    staff.logout()
    response = client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})
    assert response.status_code == 200  # the form again: an inactive user cannot sign in


def test_nobody_deactivates_themselves(client_for, cco):
    client = client_for(cco)
    assert client.get(f"/console/people/{cco.pk}/deactivate/").status_code == 403
    assert client.post(f"/console/people/{cco.pk}/deactivate/").status_code == 403
    cco.refresh_from_db()
    assert cco.is_active
    page = client.get("/console/people/").text
    row = page.split(f'data-username="{cco.username}"')[1].split("</tr>")[0]
    assert "Deactivate" not in row


def test_people_list_shows_roles_and_queues(client_for, cco, agent, django_assert_max_num_queries):
    QueueFactory(name="Billing", members=[agent])
    client = client_for(cco)
    page = client.get("/console/people/").text
    row = page.split('data-username="ada"')[1].split("</tr>")[0]
    assert '<span class="badge">agent</span>' in row
    assert "Billing" in row
    with django_assert_max_num_queries(8):
        client.get("/console/people/")
