"""Schemathesis against the server's own /openapi.json: generated requests for every
operation (a bounded number each), with a write key so that adds and deletes run too; no
answer is a 5xx (503 is the one allowed: it says "busy, retry"), and every error is JSON
`{"error": {"code", "message"}}`."""

from __future__ import annotations

import re

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from .conftest import WRITE_KEY

pytestmark = pytest.mark.slow
EXAMPLES = 15  # per operation


@pytest.fixture(scope="module")
def api_schema(built_index, tmp_path_factory):
    from lookalike.service.settings import Settings

    from .conftest import ThreadServer, copy_index

    root = tmp_path_factory.mktemp("schema")
    (root / "keys").write_text(f"write {WRITE_KEY}\n")
    server = ThreadServer(Settings.make(copy_index(built_index, root), api_key_file=root / "keys",
                                        upload_dir=root / "uploads", timeout=60, batch_size=4))
    yield schemathesis.openapi.from_url(server.url + "/openapi.json"), server.url
    server.stop()


def no_server_error(ctx, response, case) -> None:
    if response.status_code >= 500 and response.status_code != 503:
        raise AssertionError(f"{case.method} {case.path}: {response.status_code} {response.text[:300]}")
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
        assert "Traceback" not in response.text


def test_no_5xx(api_schema):
    schema, url = api_schema
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {WRITE_KEY}"}, checks=[no_server_error],
                                   excluded_checks=_excluded())

        run()
    metrics = httpx.get(url + "/metrics").text
    sent = sum(int(n) for n in re.findall(r'^lookalike_requests_total\{route="(?!/openapi).*\} (\d+)$', metrics, re.M))
    assert sent >= 5 * len(operations), metrics  # the examples really reached the server


def _excluded():
    from schemathesis import checks

    return [getattr(checks, name) for name in ("status_code_conformance", "content_type_conformance",
                                               "response_schema_conformance", "positive_data_acceptance",
                                               "negative_data_rejection", "missing_required_header",
                                               "unsupported_method", "use_after_free",
                                               "ensure_resource_availability", "ignored_auth")
            if hasattr(checks, name)]
