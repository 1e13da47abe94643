"""Canned responses (macros): who writes them, placeholders filled safely, the composer's picker."""

import re

import pytest
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cases import macros
from cases.models import Macro
from tests.cases.test_queue_page import make_case, make_customer, make_queue
from workbench.models import AuditEntry

LIST = "/cases/macros/"
NEW = "/cases/macros/new/"


@pytest.fixture
def support(agent):
    return make_queue("Support", members=[agent])


@pytest.fixture
def ann(db):
    return make_customer("Ann <i>Lee</i>")


@pytest.fixture
def case(support, ann):
    return make_case(support, ann, subject="Refund for order 42")


@pytest.fixture
def refund(supervisor):
    return macros.create_macro(
        name="Refund confirmed",
        body="Hi {{ customer.first_name }}, your refund for case #{{case.id}} is on its way.\n"
        "{{  agent.first_name  }}",
        actor=supervisor,
    )


def render_url(case, macro):
    return f"/cases/{case.pk}/macros/{macro.pk}/render/"


def edit_url(macro, action="edit"):
    return f"/cases/macros/{macro.pk}/{action}/"


def composer_body(html: str) -> str:
    found = re.search(r'<textarea name="body" id="composer-body"[^>]*>(.*?)</textarea>', html, re.S)
    return found[1]


# --- unhappy paths: what is refused, and that nothing is stored ---------------------------------


def test_an_unknown_placeholder_is_refused_by_name_and_nothing_is_saved(client_for, supervisor):
    response = client_for(supervisor).post(NEW, {
        "name": "Greeting", "body": "Hi {{ customer.first_name }} from {{ customer.email }}",
        "action": "save",
    })  # fmt: skip
    assert response.status_code == 400
    error = re.search(r'<p class="field-error" id="body-error">(.*?)</p>', response.text)[1]
    assert error.startswith("Unknown placeholder {{ customer.email }}. Use only: ")
    assert "{{ customer.first_name }}" in error  # the list of what is allowed
    assert not Macro.objects.exists()
    assert not AuditEntry.objects.filter(action__startswith="macro.").exists()


def test_the_service_names_every_unknown_placeholder(supervisor):
    with pytest.raises(ValidationError) as caught:
        macros.create_macro(
            name="Bad", body="{{ settings.SECRET_KEY }} {{ user.password }}", actor=supervisor
        )
    [message] = caught.value.message_dict["body"]
    assert message.startswith("Unknown placeholder {{ settings.SECRET_KEY }}, {{ user.password }}.")
    assert not Macro.objects.exists()


def test_a_template_tag_is_refused_when_saved(client_for, supervisor):
    response = client_for(supervisor).post(
        NEW, {"name": "Sneaky", "body": "{% load static %}{% debug %}Hello", "action": "save"}
    )
    assert response.status_code == 400
    assert "Template tags ({% … %}) are not supported" in response.text
    assert not Macro.objects.exists()


def test_a_stored_template_injection_is_never_evaluated(client_for, agent, case):
    # A row written around the service (an old import, the admin): rendering still fills only
    # the whitelist, by substitution, and never runs the template engine.
    macro = Macro.objects.create(
        name="Legacy",
        body="{% load static %}{% static 'x.js' %}{{ settings.SECRET_KEY }} {{ request.user }} "
        "{{ customer.first_name }}",
    )
    response = client_for(agent).get(render_url(case, macro))
    assert response.status_code == 200
    assert response.text == (
        "{% load static %}{% static 'x.js' %}{{ settings.SECRET_KEY }} {{ request.user }} Ann"
    )
    assert settings.SECRET_KEY not in response.text


def test_a_placeholder_value_is_not_filled_again(supervisor, support, make_user):
    tricky = make_case(support, make_customer("{{ agent.name }} {{ case.subject }}"))
    macro = macros.create_macro(name="Name", body="Dear {{ customer.name }}", actor=supervisor)
    text = macros.render_macro(macro=macro, case=tricky, agent=supervisor)
    assert text == "Dear {{ agent.name }} {{ case.subject }}"


def test_empty_name_empty_body_and_a_taken_name_are_each_a_400(client_for, supervisor, refund):
    client = client_for(supervisor)
    response = client.post(NEW, {"name": "  ", "body": " ", "action": "save"})
    assert response.status_code == 400
    assert 'id="name-error"' in response.text and 'id="body-error"' in response.text
    response = client.post(NEW, {"name": "refund CONFIRMED", "body": "Hi", "action": "save"})
    assert response.status_code == 400
    assert "A macro named “refund CONFIRMED” already exists." in response.text
    assert list(Macro.objects.values_list("name", flat=True)) == ["Refund confirmed"]


def test_an_overlong_body_is_refused(supervisor):
    with pytest.raises(ValidationError, match="under 5,000 characters"):
        macros.create_macro(name="Long", body="x" * 5001, actor=supervisor)
    assert not Macro.objects.exists()


def test_agent_cannot_create_edit_or_deactivate_macros(client_for, agent, refund):
    client = client_for(agent)
    assert client.get(NEW).status_code == 403
    assert client.post(NEW, {"name": "Mine", "body": "Hi", "action": "save"}).status_code == 403
    edit = {"name": "X", "body": "Y", "action": "save"}
    assert client.post(edit_url(refund), edit).status_code == 403
    assert client.post(edit_url(refund, "deactivate")).status_code == 403
    assert list(Macro.objects.values_list("name", "is_active")) == [("Refund confirmed", True)]
    with pytest.raises(PermissionDenied):
        macros.create_macro(name="Mine", body="Hi", actor=agent)
    assert Macro.objects.count() == 1


def test_marketer_gets_403_on_the_list_the_form_and_render(client_for, marketer, refund, case):
    client = client_for(marketer)
    assert client.get(LIST).status_code == 403
    assert client.get(NEW).status_code == 403
    assert client.get(render_url(case, refund)).status_code == 403


def test_render_for_a_case_outside_the_agents_queues_is_403(client_for, make_user, refund, case):
    stranger = make_user("agent")
    make_queue("Billing", members=[stranger])
    response = client_for(stranger).get(render_url(case, refund))
    assert response.status_code == 403
    # Not "Hi": two random letters of the page's CSRF token can spell that.
    assert "your refund for case" not in response.content.decode()


def test_the_cco_reads_macros_but_cannot_insert_one_on_a_case(client_for, cco, refund, case):
    client = client_for(cco)
    assert client.get(LIST).status_code == 200
    assert client.get(render_url(case, refund)).status_code == 403


def test_a_deactivated_or_unknown_macro_does_not_render(
    client_for, agent, supervisor, refund, case
):
    macros.deactivate_macro(macro=refund, actor=supervisor)
    client = client_for(agent)
    assert client.get(render_url(case, refund)).status_code == 404
    assert client.get(f"/cases/{case.pk}/macros/999999/render/").status_code == 404


# --- filling placeholders ----------------------------------------------------------------------


def test_render_fills_the_customers_first_name_and_the_rest(client_for, agent, refund, case):
    agent.first_name = "Ada"
    agent.save(update_fields=["first_name"])
    response = client_for(agent).get(render_url(case, refund))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert "no-cache" in response["Cache-Control"]
    # Plain text, not escaped: the composer shows it in a textarea, the channel escapes it.
    assert response.content.decode() == (
        f"Hi Ann, your refund for case #{case.pk} is on its way.\nAda"
    )


def test_every_placeholder_has_a_value(supervisor, case, make_user):
    body = " | ".join(f"{{{{{name}}}}}" for name in macros.PLACEHOLDERS)
    macro = macros.create_macro(name="All", body=body, actor=supervisor)
    grace = make_user("agent", username="grace", first_name="", last_name="")
    text = macros.render_macro(macro=macro, case=case, agent=grace)
    assert text == f"Ann | Ann <i>Lee</i> | grace | grace | {case.pk} | Refund for order 42"


def test_a_customer_without_a_name_leaves_the_name_placeholders_empty(supervisor, support):
    nameless = make_case(support, make_customer(""))
    macro = macros.create_macro(name="Hi", body="Hi {{customer.first_name}}!", actor=supervisor)
    assert macros.render_macro(macro=macro, case=nameless, agent=supervisor) == "Hi !"


# --- the pages ---------------------------------------------------------------------------------


def test_empty_list_says_what_macros_are(client_for, supervisor, agent):
    page = client_for(supervisor).get(LIST).text
    assert "No canned responses yet" in page
    assert "inserted into the composer on any case" in page
    assert "Write the first one" in page
    page = client_for(agent).get(LIST).text
    assert "Supervisors and the CCO write them" in page and "Write the first one" not in page


def test_supervisor_creates_a_macro_and_sees_it_listed(client_for, supervisor):
    client = client_for(supervisor)
    form = {"name": " Refund  sent ", "body": "Hi {{customer.name}}", "action": "save"}
    response = client.post(NEW, form)
    assert response.status_code == 302 and response["Location"] == LIST
    macro = Macro.objects.get()
    assert (macro.name, macro.body, macro.is_active, macro.created_by) == (
        "Refund sent", "Hi {{customer.name}}", True, supervisor,
    )  # fmt: skip
    assert AuditEntry.objects.filter(action="macro.created", target_id=str(macro.pk)).count() == 1
    page = client.get(LIST).text
    assert "Canned response “Refund sent” created." in page
    assert f'href="{edit_url(macro)}"' in page


def test_preview_fills_example_values_and_stores_nothing(client_for, supervisor):
    supervisor.first_name = "Sam"
    supervisor.save(update_fields=["first_name"])
    response = client_for(supervisor).post(NEW, {
        "name": "Hello", "body": "Hi {{ customer.first_name }}, <b>{{ agent.first_name }}</b> here",
        "action": "preview",
    })  # fmt: skip
    assert response.status_code == 200
    preview = re.search(r'data-testid="preview">(.*?)</div>', response.text, re.S)[1]
    assert preview == "Hi Ann, &lt;b&gt;Sam&lt;/b&gt; here"
    assert not Macro.objects.exists()


def test_agent_sees_the_list_read_only(client_for, agent, refund):
    page = client_for(agent).get(LIST).text
    assert "Refund confirmed" in page
    assert "New canned response" not in page and edit_url(refund) not in page


def test_user_text_in_the_list_is_escaped(client_for, supervisor):
    body = "<img src=x onerror=alert(1)>"
    macros.create_macro(name="<script>x</script>", body=body, actor=supervisor)
    page = client_for(supervisor).get(LIST).text
    assert "<script>x</script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page


def test_supervisor_edits_a_macro(client_for, supervisor, refund):
    client = client_for(supervisor)
    assert 'value="Refund confirmed"' in client.get(edit_url(refund)).text
    form = {"name": "Refund done", "body": "Done {{case.id}}", "action": "save"}
    response = client.post(edit_url(refund), form)
    assert response.status_code == 302
    refund.refresh_from_db()
    assert (refund.name, refund.body) == ("Refund done", "Done {{case.id}}")


def test_deactivation_asks_first_then_hides_the_macro_from_the_picker(
    client_for, supervisor, agent, refund, case
):
    client = client_for(supervisor)
    confirm = client.get(edit_url(refund, "deactivate"))
    assert confirm.status_code == 200 and "Deactivate “Refund confirmed”?" in confirm.text
    refund.refresh_from_db()
    assert refund.is_active  # asking changed nothing
    assert client.post(edit_url(refund, "deactivate")).status_code == 302
    refund.refresh_from_db()
    assert not refund.is_active
    assert "Reactivate" in client.get(LIST).text
    page = client_for(agent).get(f"/cases/{case.pk}/").text
    assert "Refund confirmed" not in page and "No canned responses yet." in page


def test_a_deactivated_macro_can_be_reactivated(client_for, supervisor, refund):
    macros.deactivate_macro(macro=refund, actor=supervisor)
    assert client_for(supervisor).post(edit_url(refund, "reactivate")).status_code == 302
    refund.refresh_from_db()
    assert refund.is_active


def test_list_query_count_does_not_grow_with_macros(
    client_for, supervisor, django_assert_num_queries
):
    client = client_for(supervisor)
    for n in range(3):
        macros.create_macro(name=f"Macro {n}", body="Hi", actor=supervisor)
    client.get(LIST)
    with CaptureQueriesContext(connection) as three:
        assert client.get(LIST).text.count('<tr id="macro-') == 3
    for n in range(3, 12):
        macros.create_macro(name=f"Macro {n}", body="Hi", actor=supervisor)
    with django_assert_num_queries(len(three.captured_queries)):
        assert client.get(LIST).text.count('<tr id="macro-') == 12


def test_queue_page_links_to_macros_for_supervisors_only(client_for, supervisor, agent):
    assert 'id="macros-link"' in client_for(supervisor).get("/cases/").text
    assert 'id="macros-link"' not in client_for(agent).get("/cases/").text


# --- the composer's picker ---------------------------------------------------------------------


def test_the_case_page_offers_active_macros_in_the_composer(client_for, agent, refund, case):
    page = client_for(agent).get(f"/cases/{case.pk}/").text
    assert '<label for="macro-select">Canned response</label>' in page
    assert f'data-render-url="{render_url(case, refund)}">Refund confirmed</option>' in page
    assert '<button type="submit" form="macro-picker" data-macro-insert>Insert</button>' in page
    # The no-JS form sits outside the composer's form (forms cannot nest).
    composer = page.split('id="composer-form"')[1].split("</form>")[0]
    assert "<form" not in composer
    assert f'<form id="macro-picker" method="get" action="/cases/{case.pk}/#composer-body"' in page
    assert "js/composer" in page


def test_without_js_the_picker_reloads_the_page_with_the_composer_filled(
    client_for, agent, refund, case
):
    page = client_for(agent).get(f"/cases/{case.pk}/?macro={refund.pk}").text
    # The customer's name is user text: escaped inside the textarea.
    assert composer_body(page).startswith(f"Hi Ann, your refund for case #{case.pk}")


@pytest.mark.parametrize("value", ["abc", "-1", "999999", "1" * 40, ""])
def test_a_bad_macro_parameter_leaves_the_composer_empty(client_for, agent, case, value):
    response = client_for(agent).get(f"/cases/{case.pk}/?macro={value}")
    assert response.status_code == 200
    assert composer_body(response.text) == ""


def test_the_cco_gets_no_prefill_as_the_cco_does_not_work_cases(client_for, cco, refund, case):
    page = client_for(cco).get(f"/cases/{case.pk}/?macro={refund.pk}").text
    assert 'id="composer-body"' not in page and "your refund" not in page


def test_composer_script_is_served_from_our_origin(client_for, agent, refund, case):
    response = client_for(agent).get(f"/cases/{case.pk}/")
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert (settings.BASE_DIR / "static" / "js" / "composer.js").is_file()
