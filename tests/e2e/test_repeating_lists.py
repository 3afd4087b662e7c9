"""A server whose list repeats itself (the same rows whatever page or filter is asked, always
with a `next` link, as a static API sample did): `sync` ends by itself with a bounded number
of requests and a one-line error naming the endpoint, as a real process against the sandbox."""

from __future__ import annotations

import subprocess

import pytest

from sandbox.amocrm import AmoSandbox
from sandbox.data import generate
from tests.e2e.test_interrupt_and_status import start_sync, write_config
from tests.e2e.test_run_e2e import query

pytestmark = pytest.mark.e2e


@pytest.fixture
def amo_sandbox():
    with AmoSandbox(generate(seed=1, size=300), limits=False) as server:
        yield server


def run_sync(tmp_path, sandbox, *args, timeout=60):
    config = write_config(tmp_path, sandbox)
    proc, err = start_sync(tmp_path, config, *args)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"sync did not end within {timeout} s: {len(sandbox.request_log)} requests so far")
    return code, open(err).read()


@pytest.mark.parametrize(
    "path, stream",
    [
        ("/api/v4/companies", "companies"),  # keyset (filters on, sorted by updated_at)
        ("/api/v4/tasks", "tasks"),  # offset with overlap checks (by id)
        ("/api/v4/users", "users"),  # plain `next` paging (snapshot)
    ],
)
def test_a_list_that_repeats_itself_fails_its_stream_within_bounded_requests(
    amo_sandbox, tmp_path, path, stream
):
    amo_sandbox.repeat_list(path, rows=2)
    code, text = run_sync(tmp_path, amo_sandbox, "--stream", stream)
    asked = len(amo_sandbox.requests_to(path))
    assert asked <= 12, f"{asked} requests to {path}"
    print(f"{path}: {asked} requests")
    assert code == 1, text
    db = str(tmp_path / "mirror.db")
    ((status, error),) = query(db, f"SELECT status, error FROM sync_runs WHERE stream = '{stream}'")
    assert status == "failed"
    assert "\n" not in error and path in error and "same rows" in error, error
    assert "Traceback" not in text


def test_a_list_that_repeats_itself_on_an_account_without_filters(tmp_path):
    """Newest-first paging (no API filter add-on) over a repeating list ends too."""
    with AmoSandbox(generate(seed=1, size=300), limits=False, api_filter=False) as amo:
        amo.repeat_list("/api/v4/contacts", rows=2)
        code, text = run_sync(tmp_path, amo, "--stream", "contacts")
        assert len(amo.requests_to("/api/v4/contacts")) <= 12
    assert code == 1, text
    ((status, error),) = query(
        str(tmp_path / "mirror.db"), "SELECT status, error FROM sync_runs WHERE stream = 'contacts'"
    )
    assert status == "failed" and "/api/v4/contacts" in error, error


def test_a_bitrix24_list_that_ignores_its_id_filter_fails_its_stream(tmp_path):
    """crm.contact.list answering every `>ID` page with the same first 50 rows: the ID-window
    reader ends with one line naming the method instead of asking forever."""
    from sandbox.bitrix24 import Bitrix24Sandbox

    with Bitrix24Sandbox(generate(seed=1, size=1000), limits=False, cost_model=False) as b24:
        b24.ignore_list_filters("contact")
        config = tmp_path / "config.toml"
        config.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"

[[sources]]
name = "b24"
kind = "bitrix24"
webhook_url = "{b24.webhook_url}"
""")
        proc, err = start_sync(tmp_path, str(config), "--stream", "contacts")
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"sync did not end within 60 s: {len(b24.request_log)} requests so far")
        asked = len(b24.request_log)
    print(f"bitrix24 contacts: {asked} requests")
    assert asked <= 12, asked
    assert code == 1, open(err).read()
    ((status, error),) = query(
        str(tmp_path / "mirror.db"), "SELECT status, error FROM sync_runs WHERE stream = 'contacts'"
    )
    assert status == "failed"
    assert "\n" not in error and "crm.contact.list" in error and "same rows" in error, error
