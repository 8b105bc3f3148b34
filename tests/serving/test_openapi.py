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

import re
import subprocess
import sys

import pytest
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
    assert parameters == {"name": ["tiny", "tiny-explainer", "tiny-saliency", "tiny-smoothgrad",
                                   "tiny-integrated-gradients", "tiny-grad-cam"], "version": ["1"]}


def test_examples_are_answered(tiny_server, document):
    for path, method, name in [("/v1/models/{name}:predict", "post", "tiny"),
                               ("/v1/models/{name}:explain", "post", "tiny"),
                               ("/v2/models/{name}/infer", "post", "tiny"),
                               ("/v2/models/{name}/explain", "post", "tiny")]:
        example = document["paths"][path][method]["requestBody"]["content"]["application/json"]["example"]
        status, answer = call(tiny_server + path.replace("{name}", name), example)
        assert status == 200, (path, answer)


def test_the_explanation_schema_describes_each_outcome_field_an_answer_has(tiny_server, document):
    schema = document["components"]["schemas"]["explanation"]
    assert schema["properties"]["first_met_step"]["type"] == "integer"
    assert schema["properties"]["target_is_top"]["type"] == "boolean"
    assert "-1 if it never did" in schema["properties"]["first_met_step"]["description"]
    example = document["paths"]["/v1/models/{name}:explain"]["post"]["requestBody"]["content"]["application/json"]
    status, answer = call(f"{tiny_server}/v1/models/tiny:explain", example["example"])
    assert status == 200 and sorted(answer["predictions"][0]) == sorted(schema["required"])
    # The example's first of two steps moves δ by ρ·o·2/3 = 3.3ρ: step 1 begins past the budget.
    assert isinstance(answer["predictions"][0]["target_is_top"], bool)
    assert answer["predictions"][0]["first_met_step"] == 1


@pytest.mark.slow
@pytest.mark.multiprocess
def test_schemathesis_finds_no_server_error_and_no_answer_off_its_schema(tiny_server, tmp_path):
    # Its command line, as a user runs it: the pytest plugin reaches into pytest's internals.
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{tiny_server}/openapi.json", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--phases", "examples,coverage,fuzzing",
         "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", "1", "--no-color"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)  # its .schemathesis/ cache lands there
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", run.stdout)
    total = re.search(r"Operations: +\d+ selected / (\d+) total", run.stdout)
    assert tested and total and tested[1] == total[1], run.stdout[-3000:]  # every operation it read
    assert int(total[1]) >= 27, run.stdout[-3000:]
    assert re.search(r"\d+ generated, \d+ passed", run.stdout), run.stdout[-3000:]
