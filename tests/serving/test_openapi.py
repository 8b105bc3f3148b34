"""The OpenAPI document at /openapi.json, and schemathesis run against the live server by it.

schemathesis sends the document's examples and then generated requests,
valid and invalid, to every operation, and checks each answer: never a 5xx,
a documented status code, content type and headers, a body matching its
response schema, and schema-invalid requests refused. Left out:
`positive_data_acceptance` (every schema-valid request accepted), which no
JSON schema can promise here: pixels in [0, 1], a `data` length equal to its
shape's product and a batch within `max_batch` are checked by the server
with messages naming the field, not by the document.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.routing import Route

from keras_robust.serving import Limits, create_app
from tests.helpers import TEST_LIMITS, call

EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def app(tiny_export):
    return create_app(str(tiny_export[0]), limits=Limits(**TEST_LIMITS))


@pytest.fixture(scope="module")
def document(tiny_server):
    status, document = call(f"{tiny_server}/openapi.json")
    assert status == 200
    return document


@pytest.fixture
def served_schema(tiny_server):
    return schemathesis.openapi.from_url(f"{tiny_server}/openapi.json")


def test_every_route_is_documented(app, document):
    routes = {(route.path.replace(":{verb}", ":verb"), method.lower()) for route in app.routes
              if isinstance(route, Route) for method in route.methods if method != "HEAD"}
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    # The catch-all of unknown V1 verbs answers 404 only: not an operation.
    assert operations == routes - {("/v1/models/{name}:verb", "post"),
                                   ("/v1/models/{name}/versions/{version}:verb", "post")}


def test_path_parameters_list_what_is_served(document):
    parameters = {p["name"]: p["schema"]["enum"] for p in document["paths"]["/v2/models/{name}/versions/{version}/infer"]
                  ["post"]["parameters"] if p["in"] == "path"}
    assert parameters == {"name": ["tiny", "tiny-explainer"], "version": ["1"]}


def test_examples_are_answered(tiny_server, document):
    for path, method, name in [("/v1/models/{name}:predict", "post", "tiny"),
                               ("/v1/models/{name}:explain", "post", "tiny"),
                               ("/v2/models/{name}/infer", "post", "tiny"),
                               ("/v2/models/{name}/explain", "post", "tiny")]:
        example = document["paths"][path][method]["requestBody"]["content"]["application/json"]["example"]
        status, answer = call(tiny_server + path.replace("{name}", name), example)
        assert status == 200, (path, answer)


schema = schemathesis.pytest.from_fixture("served_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
def test_schemathesis_finds_no_server_error_and_no_answer_off_its_schema(case):
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
