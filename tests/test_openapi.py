"""The OpenAPI document covers every route the app serves, and is a valid OpenAPI 3.1 document."""

from __future__ import annotations

import json
import re

import jsonschema_rs
from starlette.routing import Route

from gateway.app import create_app
from gateway.errors import ERRORS
from gateway.openapi import openapi_document
from gateway.settings import Settings

# Routes that are not the API, and why.
EXCLUDED = {
    "/dashboard": "a page: HTML for a signed-in browser",
    "/dashboard/sign-in": "the page's sign-in form (form post, cookie)",
    "/dashboard/sign-out": "the page's sign-out form",
    "/dashboard/static/{name}": "static assets of the pages",
    "/review": "a page: HTML for a signed-in reviewer",
    "/review/sign-in": "the page's sign-in form (form post, cookie)",
    "/review/sign-out": "the page's sign-out form",
    "/review/api/queues/{queue_id}/claim": "the reviewer page's own calls (session cookie, same Origin only): the "
                                           "documented /v1/queues/{queue_id}/claim behind a cookie",
    "/review/api/queues/{queue_id}/items/{item_id}/label": "as above, for /v1/queues/.../label",
    "/review/api/queues/{queue_id}/items/{item_id}/skip": "as above, for /v1/queues/.../skip",
    "/v1/widget.js": "a static asset: the widget's script",
    "/v1/widget.{version}.js": "a static asset: the widget's script, pinned to a version",
}


def served(tmp_path) -> set[tuple[str, str]]:
    """(path as OpenAPI writes it, method) for every route of the app; HEAD answers like GET and is not listed."""
    app = create_app(Settings(db=str(tmp_path / "bc.db")))
    found = set()
    for route in app.routes:
        assert isinstance(route, Route), f"{route!r}: a route kind this test does not know"
        path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", route.path)
        for method in route.methods or ():
            if method != "HEAD":
                found.add((path, method.lower()))
    return found


def test_every_route_is_documented_or_excluded_with_a_reason(tmp_path):
    routes = served(tmp_path)
    documented = {(path, method) for path, item in openapi_document()["paths"].items() for method in item}
    missing = {(path, method) for path, method in routes if path not in EXCLUDED} - documented
    assert missing == set()
    assert documented - routes == set(), "documented but not served"
    assert set(EXCLUDED) <= {path for path, _ in routes}, "an exclusion for a route that no longer exists"


def test_every_reference_resolves_and_every_schema_compiles():
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    # Every $ref resolves.
    text = json.dumps(document)
    for name in set(re.findall(r'"#/components/schemas/([^"]+)"', text)):
        assert name in document["components"]["schemas"], name
    # Every schema compiles as JSON Schema.
    for name, schema in document["components"]["schemas"].items():
        jsonschema_rs.validator_for({**schema, "components": document["components"]})


def test_every_error_answer_is_problem_json_with_its_codes():
    for path, item in openapi_document()["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                codes = re.findall(r"`(\w+)`: ", response["description"])
                if int(status) >= 400 and codes:
                    assert response["content"] == {"application/problem+json": {
                        "schema": {"$ref": "#/components/schemas/Problem"}}}, (path, method, status)
                    assert all(str(ERRORS[code][0]) == status for code in codes), (path, method, status)


def test_security_schemes():
    document = openapi_document()
    assert set(document["components"]["securitySchemes"]) == {"secretKey", "reviewerKey", "metricsToken"}
    paths = document["paths"]
    assert paths["/v1/queues/{queue_id}/claim"]["post"]["security"] == [{"secretKey": []}, {"reviewerKey": []}]
    assert paths["/v1/traces/{trace_id}"]["get"]["security"] == [{"secretKey": []}, {"reviewerKey": []}]
    assert paths["/v1/queues"]["post"]["security"] == [{"secretKey": []}]
    assert paths["/v1/events"]["post"]["security"] == [{}, {"secretKey": []}]
    assert "security" not in paths["/v1/projects/{public_key}/config"]["get"]
