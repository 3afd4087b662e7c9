"""amoCRM custom fields with `responses`: list (paged), create, batched writes, bad-card retry."""

import json

import pytest
import responses

from adapters.amocrm.fields import card_patch, format_value
from adapters.base import FieldWrite
from adapters.errors import ScopeError
from tests.unit.test_amocrm_support import BASE, hal, make_adapter, serve_pages


@pytest.fixture
def adapter(tmp_path):
    a = make_adapter(tmp_path)
    yield a
    a.close()


def test_value_formatting_and_patch_shape():
    assert [format_value(v) for v in (42.5, 3.0, 0.0, -1.25, 1e-9, 1234567.891, None)] == [
        "42.5",
        "3",
        "0",
        "-1.25",
        "0",
        "1234567.891",
        None,
    ]
    assert card_patch(FieldWrite(5, {"901": 1.5, "KPI_X": None})) == {
        "id": 5,
        "custom_fields_values": [
            {"field_id": 901, "values": [{"value": "1.5"}]},
            {"field_code": "KPI_X", "values": None},
        ],
    }


@responses.activate
def test_list_fields_pages_and_exposes_type(adapter):
    f = lambda i, t, code=None: {"id": i, "name": f"F{i}", "type": t, "code": code}  # noqa: E731
    serve_pages(
        "/api/v4/companies/custom_fields",
        [
            hal("custom_fields", [f(1, "numeric", "KPI_A"), f(2, "text")], True),
            hal("custom_fields", [f(3, "monetary")]),
        ],
    )
    fields = adapter.list_fields("company")
    assert [(x.key, x.name, x.type, x.code) for x in fields] == [
        ("1", "F1", "numeric", "KPI_A"),
        ("2", "F2", "text", None),
        ("3", "F3", "monetary", None),
    ]
    with pytest.raises(ValueError):
        adapter.list_fields("deal")


@responses.activate
def test_create_field(adapter):
    responses.post(
        BASE + "/api/v4/contacts/custom_fields",
        status=201,
        json={
            "_embedded": {
                "custom_fields": [
                    {"id": 900123, "name": "KPI: Win rate, %", "type": "numeric", "code": "KPI_WIN_RATE"}
                ]
            }
        },
    )
    field = adapter.create_field("contact", "KPI_WIN_RATE", "KPI: Win rate, %")
    assert (field.key, field.type, field.code) == ("900123", "numeric", "KPI_WIN_RATE")
    assert json.loads(responses.calls[0].request.body) == [
        {"type": "numeric", "name": "KPI: Win rate, %", "code": "KPI_WIN_RATE", "is_api_only": True}
    ]


@responses.activate
def test_create_field_without_admin_rights_is_scope_error_not_block(adapter):
    responses.post(BASE + "/api/v4/contacts/custom_fields", status=403, json={"title": "Forbidden"})
    responses.get(BASE + "/api/v4/account", json={"id": 1})
    with pytest.raises(ScopeError, match="admin"):
        adapter.create_field("contact", "KPI_X", "KPI X")
    adapter.check()  # the source is not blocked


@responses.activate
def test_write_values_batches_of_50(adapter):
    bodies = []

    def patch(request):
        items = json.loads(request.body)
        bodies.append(items)
        return (
            200,
            {},
            json.dumps({"_embedded": {"contacts": [{"id": i["id"], "updated_at": 1} for i in items]}}),
        )

    responses.add_callback(responses.PATCH, BASE + "/api/v4/contacts", callback=patch)
    writes = [FieldWrite(i, {"901": float(i)}) for i in range(1, 121)]
    results = adapter.write_values("contact", writes)
    assert [len(b) for b in bodies] == [50, 50, 20]
    assert [r.entity_id for r in results] == list(range(1, 121)) and all(r.ok for r in results)
    assert bodies[0][1] == {"id": 2, "custom_fields_values": [{"field_id": 901, "values": [{"value": "2"}]}]}


@responses.activate
def test_one_rejected_card_does_not_stop_the_others(adapter):
    def patch(request):
        items = json.loads(request.body)
        bad = [str(n) for n, i in enumerate(items) if i["id"] == 3]
        if bad:
            return (
                400,
                {},
                json.dumps(
                    {
                        "title": "Bad Request",
                        "status": 400,
                        "detail": "Request validation failed",
                        "validation-errors": [
                            {
                                "request_id": bad[0],
                                "errors": [{"code": "NotFound", "path": "id", "detail": "Entity not found"}],
                            }
                        ],
                    }
                ),
            )
        return 200, {}, json.dumps({"_embedded": {"companies": [{"id": i["id"]} for i in items]}})

    responses.add_callback(responses.PATCH, BASE + "/api/v4/companies", callback=patch)
    writes = [FieldWrite(i, {"901": 1.0}) for i in range(1, 6)]
    results = adapter.write_values("company", writes)
    assert [(r.entity_id, r.ok) for r in results] == [(1, True), (2, True), (3, False), (4, True), (5, True)]
    assert "id: Entity not found" in results[2].error
    assert len(responses.calls) == 1 + 5


@responses.activate
def test_persistent_5xx_marks_batch_failed_and_continues(adapter):
    responses.patch(BASE + "/api/v4/contacts", status=503)
    results = adapter.write_values("contact", [FieldWrite(1, {"901": None})])
    assert results[0].ok is False and "HTTP 503" in results[0].error
