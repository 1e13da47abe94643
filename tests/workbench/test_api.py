"""The API: session and token auth, roles as permissions, the schema and offline docs."""

import re

from rest_framework.authtoken.models import Token


def test_me_answers_who_the_caller_is_with_a_token(client, agent):
    token = Token.objects.create(user=agent)
    response = client.get("/api/me/", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200
    assert response.json() == {
        "id": agent.pk,
        "username": "ada",
        "name": agent.get_full_name(),
        "timezone": "UTC",
        "roles": ["agent"],
    }


def test_api_refuses_anonymous_callers_with_401_json(client, db):
    response = client.get("/api/me/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}


def test_api_refuses_a_bad_token(client, db):
    response = client.get("/api/me/", HTTP_AUTHORIZATION="Token not-a-real-token")
    assert response.status_code == 401


def test_schema_and_docs_are_served_without_a_cdn(client_for, cco):
    client = client_for(cco)
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    assert "/api/me/" in schema.json()["paths"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in docs.text
    assert not re.search(r"(src|href)=[\"'][^\"']*cdn", docs.text, re.IGNORECASE)
