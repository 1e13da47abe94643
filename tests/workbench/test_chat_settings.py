"""The CCO's page of websites allowed to embed the chat widget: who may use it, add, remove."""

import pytest

from workbench.models import AuditEntry, ChatWidgetOrigin

pytestmark = pytest.mark.django_db

PAGE = "/console/chat/"


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer"])
def test_only_the_cco_may_see_or_change_allowed_origins(make_user, client_for, role):
    row = ChatWidgetOrigin.objects.create(origin="https://shop.example")
    client = client_for(make_user(role, username=f"someone-{role}"))
    assert client.get(PAGE).status_code == 403
    assert client.post(PAGE, {"origin": "https://evil.example"}).status_code == 403
    assert client.get(f"{PAGE}{row.pk}/remove/").status_code == 403
    assert client.post(f"{PAGE}{row.pk}/remove/").status_code == 403
    assert list(ChatWidgetOrigin.objects.values_list("origin", flat=True)) == [
        "https://shop.example"
    ]
    assert not AuditEntry.objects.filter(action__startswith="chat_origin").exists()


def test_signed_out_visitors_go_to_the_sign_in_page(client):
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_console_links_to_the_chat_page(client_for, cco):
    html = client_for(cco).get("/console/").content.decode()
    assert f'href="{PAGE}"' in html


def test_the_cco_adds_an_origin_normalised_and_audited(client_for, cco):
    client = client_for(cco)
    empty = client.get(PAGE).content.decode()
    assert "No other website may embed the widget yet" in empty
    response = client.post(PAGE, {"origin": "HTTPS://Shop.Example:443/"})
    assert response.status_code == 302
    row = ChatWidgetOrigin.objects.get()
    assert (row.origin, row.added_by) == ("https://shop.example", cco)
    entry = AuditEntry.objects.get(action="chat_origin_added")
    assert (entry.actor, entry.target_label) == (cco, "https://shop.example")
    assert "https://shop.example" in client.get(PAGE).content.decode()


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("", "This field is required."),
        ("shop.example", "Write an origin such as https://shop.example"),
        ("ftp://shop.example", "Write an origin such as https://shop.example"),
        ("https://shop.example/contact", "no path"),
        ("https://shop.example:99999", "port"),
    ],
)
def test_a_malformed_origin_is_refused_next_to_the_field(client_for, cco, value, error):
    response = client_for(cco).post(PAGE, {"origin": value})
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="origin-error"' in html and error in html
    assert not ChatWidgetOrigin.objects.exists()


def test_an_origin_allowed_twice_is_refused(client_for, cco):
    ChatWidgetOrigin.objects.create(origin="https://shop.example")
    response = client_for(cco).post(PAGE, {"origin": "https://SHOP.example"})
    assert response.status_code == 400
    assert "https://shop.example is allowed already." in response.content.decode()
    assert ChatWidgetOrigin.objects.count() == 1


def test_removing_an_origin_asks_first_then_removes_and_audits(client_for, cco):
    row = ChatWidgetOrigin.objects.create(origin="https://shop.example")
    client = client_for(cco)
    confirm = client.get(f"{PAGE}{row.pk}/remove/")
    assert confirm.status_code == 200
    assert "Stop allowing" in confirm.content.decode()
    assert ChatWidgetOrigin.objects.count() == 1  # asking removes nothing
    response = client.post(f"{PAGE}{row.pk}/remove/")
    assert response.status_code == 302
    assert not ChatWidgetOrigin.objects.exists()
    entry = AuditEntry.objects.get(action="chat_origin_removed")
    assert (entry.actor, entry.target_label) == (cco, "https://shop.example")
    assert client.post(f"{PAGE}{row.pk}/remove/").status_code == 404


def test_the_list_page_runs_a_fixed_number_of_queries(
    client_for, cco, django_assert_max_num_queries
):
    for n in range(5):
        ChatWidgetOrigin.objects.create(origin=f"https://shop{n}.example", added_by=cco)
    client = client_for(cco)
    client.get(PAGE)
    with django_assert_max_num_queries(12):
        html = client.get(PAGE).content.decode()
    assert html.count("Remove…") == 5
