"""Failure alerts: one per failed run, none on success unless asked, secrets masked."""

import logging
import sys

from adapters import redact
from connector.config.loader import NotifyConfig
from connector.run.notify import Notifier
from connector.run.sync import Outcome, StreamResult


class Capture:
    def __init__(self):
        self.messages = []

    def __call__(self, title, body):
        self.messages.append((title, body))


def test_one_alert_per_failed_stream_naming_source_stream_error():
    cap = Capture()
    n = Notifier(NotifyConfig(urls=["json://localhost"]), sender=cap)
    results = [
        StreamResult("main", "users", "ok"),
        StreamResult("main", "deals", "failed", error="HTTP 500 after 5 tries"),
        StreamResult("main", "tasks", "skipped", error="no scope"),
        StreamResult("main", "calls", "interrupted", error="stopped by signal"),
        StreamResult("main", "events", "failed", error="bad JSON"),
    ]
    assert n.sync_results("main", results) == 2
    assert len(cap.messages) == 2
    title, body = cap.messages[0]
    assert "main/deals" in title and "failed" in title
    assert "source 'main'" in body and "stream 'deals'" in body and "HTTP 500 after 5 tries" in body
    assert "main/events" in cap.messages[1][0] and "bad JSON" in cap.messages[1][1]


def test_auth_failure_is_one_alert_listing_the_streams_not_run():
    cap = Capture()
    n = Notifier(NotifyConfig(), sender=cap)
    results = [
        StreamResult("main", "users", "failed", error="token rejected (401)", stops_source=True),
        StreamResult("main", "deals", Outcome.NOT_RUN, error="not run: token rejected (401)"),
        StreamResult("main", "tasks", Outcome.NOT_RUN, error="not run: token rejected (401)"),
    ]
    assert n.sync_results("main", results) == 1
    assert "not run because of this: deals, tasks" in cap.messages[0][1]


def test_no_alert_on_success_unless_on_success():
    cap = Capture()
    assert Notifier(NotifyConfig(), sender=cap).succeeded("main", "120 clients") is False
    assert Notifier(NotifyConfig(), sender=cap).sync_results("main", [StreamResult("main", "x", "ok")]) == 0
    assert cap.messages == []
    assert Notifier(NotifyConfig(on_success=True), sender=cap).succeeded("main", "120 clients")
    assert len(cap.messages) == 1
    assert "ok: main" in cap.messages[0][0] and "120 clients" in cap.messages[0][1]


def test_secrets_are_masked_in_alerts():
    redact.register("sekret-token-123456")
    cap = Capture()
    Notifier(NotifyConfig(), sender=cap).failed("main", "deals", "GET ?token=sekret-token-123456 failed")
    assert "sekret-token-123456" not in cap.messages[0][0] + cap.messages[0][1]


def test_broken_channel_is_logged_not_raised(caplog):
    def broken(title, body):
        raise ConnectionError("smtp down")

    with caplog.at_level(logging.ERROR):
        assert Notifier(NotifyConfig(), sender=broken).failed("main", "deals", "boom") is False
    assert "could not send an alert" in caplog.text and "smtp down" in caplog.text


def test_without_apprise_alerts_are_only_logged(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "apprise", None)  # import apprise -> ImportError
    with caplog.at_level(logging.WARNING):
        sent = Notifier(NotifyConfig(urls=["tgram://bot/chat"])).failed("main", "deals", "boom")
    assert sent is False
    assert "Apprise is not installed" in caplog.text and "tgram://bot/chat" not in caplog.text


def test_no_urls_means_no_channel():
    assert Notifier(NotifyConfig()).failed("main", "deals", "boom") is False


def test_apprise_is_used_when_installed(monkeypatch):
    sent = []

    class FakeApprise:
        def __init__(self):
            self.urls = []

        def add(self, url):
            self.urls.append(url)
            return True

        def notify(self, title, body):
            sent.append((self.urls, title, body))
            return True

    monkeypatch.setitem(sys.modules, "apprise", type(sys)("apprise"))
    sys.modules["apprise"].Apprise = FakeApprise
    assert Notifier(NotifyConfig(urls=["mailto://ops@example.com"])).failed("main", "deals", "boom")
    assert sent[0][0] == ["mailto://ops@example.com"] and "main/deals" in sent[0][1]
