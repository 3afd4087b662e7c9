"""Fake amoCRM and Bitrix24 servers on 127.0.0.1, serving generated, deterministic CRM data.

They speak the real APIs' shapes, paging, auth, rate limits and errors, so a client can be
tested end to end with no network and no CRM account. `crm-connector demo` and
`crm-connector sandbox amocrm|bitrix24` start them; you can start them in your own tests.

The package stands apart: it imports nothing from `connector` or `adapters` and needs only
the standard library (plus the `openssl` command for `https=True`);
tests/unit/test_sandbox_apart.py checks both, and that the examples below run.

Data: `generate(seed, size)` builds an account with `size` deals plus contacts, companies,
leads, tasks, calls and their history; the same seed and size give the same data.

A fake amoCRM (point the client at base_url = `server.url`, long-lived token =
`server.access_token`):

    import requests
    from sandbox.amocrm import AmoSandbox
    from sandbox.data import generate

    with AmoSandbox(generate(seed=1, size=300), limits=False) as server:
        headers = {"Authorization": f"Bearer {server.access_token}"}
        r = requests.get(server.url + "/api/v4/leads", headers=headers, params={"limit": 50})
        assert len(r.json()["_embedded"]["leads"]) == 50

A fake Bitrix24 (point the client at the incoming webhook `server.webhook_url`):

    from sandbox.bitrix24 import Bitrix24Sandbox

    with Bitrix24Sandbox(generate(seed=1, size=300), limits=False) as server:
        r = requests.post(server.webhook_url + "crm.deal.list", json={"start": 0})
        assert r.json()["total"] == sum(not d["is_deleted"] for d in server.dataset.deals)

In pytest, one server per test, started and stopped around it:

    import pytest

    @pytest.fixture
    def amo():
        with AmoSandbox(generate(seed=1, size=300), limits=False) as server:
            yield server

Between two syncs, change the "CRM" through `server.dataset` (each change bumps
`updated_at`, as the real CRM does); inject failures and see what the client sent:

    with AmoSandbox(generate(seed=1, size=300), limits=False) as server:
        headers = {"Authorization": f"Bearer {server.access_token}"}
        ds = server.dataset
        deal = ds.deals[0]
        ds.update("deals", deal["id"], name="Renamed")
        ds.add("contacts", name="New person")
        ds.delete("deals", deal["id"])           # to the trash; restore() brings it back
        server.fail_next("500")                  # or "timeout", "reset", "truncated", "badjson", "html", "503", "limit"
        assert requests.get(server.url + "/api/v4/account", headers=headers).status_code == 500
        assert server.request_log[-1]["fault"] == "500"

`limits=True` (the default) enforces the CRM's rate limits; `fault_rate=` draws faults at
random, seeded. Each server class's docstring lists its other knobs and the quirks it
reproduces.

Modules: one package per CRM, `amocrm` (`AmoSandbox`, `WON`, `LOST`) and `bitrix24`
(`Bitrix24Sandbox`), each with its server in `server` and its parts beside it
(`bitrix24.methods.METHODS` names every REST method served); shared by both: `data`
(`generate`, `Dataset`) with `data_store` (the dataset and its mutations) and `data_build`
(the generators), `httpbase` (the server plumbing, fault kinds), `malformed` (bad payloads)
and `call_outcomes` (call results).
"""
