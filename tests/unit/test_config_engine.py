"""The fleet's config: `[engine]` (local | celery with a checked Redis URL), one mirror file per
source (`[storage] path` with `{source}`) and `[[sources]] queue`. Every problem is one line
naming the file and the key (`engine.<key>`, `storage.<key>`, `sources[i] (name).queue`), exit
code 2 through the CLI; a broker password never shows."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from adapters import redact
from connector.cli import main
from connector.config import loader as config
from connector.config.engine import DEFAULT_QUEUE
from connector.config.loader import ConfigError

SOURCES = """
[[sources]]
name = "main"
kind = "amocrm"
base_url = "https://example.amocrm.ru"
access_token = "amo-token-value-123"

[[sources]]
name = "b24"
kind = "bitrix24"
webhook_url = "https://portal.bitrix24.ru/rest/1/s3cretwebhook/"
"""


def write(tmp_path, text: str, name: str = "config.toml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def with_engine(tmp_path, engine: str, storage: str | None = None, sources: str = SOURCES) -> str:
    storage = storage if storage is not None else f'path = "{tmp_path / "m.db"}"'
    return write(tmp_path, f"[storage]\n{storage}\n\n[engine]\n{engine}\n{sources}")


def load_error(path: str) -> str:
    with pytest.raises(ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert "\n" not in message
    return message


# ---- [engine] ----------------------------------------------------------------------------------


def test_no_engine_section_is_the_local_engine(tmp_path):
    cfg = config.load(write(tmp_path, f'[storage]\npath = "{tmp_path / "m.db"}"\n{SOURCES}'))
    assert (cfg.engine.kind, cfg.engine.celery, cfg.engine.broker_url) == ("local", False, None)
    assert [s.queue for s in cfg.sources] == [DEFAULT_QUEUE, DEFAULT_QUEUE]


def test_celery_engine_loads_its_keys(tmp_path):
    cfg = config.load(
        with_engine(
            tmp_path,
            'kind = "celery"\nbroker_url = "redis://10.0.0.5:6380/3"\n'
            'result_backend = "rediss://cache.internal/1"\n'
            "visibility_timeout_s = 900\nlease_s = 60",
        )
    )
    e = cfg.engine
    assert e.celery and e.kind == "celery"
    assert (e.broker_url, e.result_backend) == ("redis://10.0.0.5:6380/3", "rediss://cache.internal/1")
    assert (e.visibility_timeout_s, e.lease_s) == (900, 60)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1",
        "redis://127.0.0.1:6379",
        "redis://h:6379/15",
        "redis://:pw@h:1/0",
        "redis://user:pw@h:65535/2",
        "rediss://redis.example.com:6380/0",
        "unix:///run/redis/redis.sock",
    ],
)
def test_good_redis_urls_pass(tmp_path, url):
    cfg = config.load(with_engine(tmp_path, f'kind = "celery"\nbroker_url = "{url}"'))
    assert cfg.engine.broker_url == url


@pytest.mark.parametrize(
    "engine, key, problem",
    [
        ('kind = "kubernetes"', "engine.kind", "must be local or celery, got 'kubernetes'"),
        ('kind = "celery"', "engine.broker_url", 'is required with kind = "celery"'),
        (
            'kind = "celery"\nbroker_url = "http://127.0.0.1:6379/0"',
            "engine.broker_url",
            "must start with redis://, rediss:// or unix://",
        ),
        (
            'kind = "celery"\nbroker_url = "amqp://guest@127.0.0.1//"',
            "engine.broker_url",
            "must start with redis://",
        ),
        ('kind = "celery"\nbroker_url = "redis://:6379/0"', "engine.broker_url", "names no host"),
        ('kind = "celery"\nbroker_url = "redis:///0"', "engine.broker_url", "names no host"),
        ('kind = "celery"\nbroker_url = "redis://127.0.0.1:70000/0"', "engine.broker_url", "ut of range"),
        (
            'kind = "celery"\nbroker_url = "redis://127.0.0.1:0/0"',
            "engine.broker_url",
            "port 0 is out of range",
        ),
        (
            'kind = "celery"\nbroker_url = "redis://127.0.0.1:6379/cache"',
            "engine.broker_url",
            "database 'cache' must be a number",
        ),
        (
            'kind = "celery"\nbroker_url = "redis://127.0.0.1:6379/-1"',
            "engine.broker_url",
            "database '-1' must be a number",
        ),
        ('kind = "celery"\nbroker_url = "unix://"', "engine.broker_url", "needs the socket's path"),
        (
            'kind = "celery"\nbroker_url = "redis://h/0"\nresult_backend = "memcached://h:11211"',
            "engine.result_backend",
            "must start with redis://",
        ),
        (
            'kind = "celery"\nbroker_url = "redis://h/0"\nresult_backend = "redis://h/db1"',
            "engine.result_backend",
            "database 'db1' must be a number",
        ),
        (
            'kind = "celery"\nbroker_url = "redis://h/0"\nvisibility_timeout_s = 5',
            "engine.visibility_timeout_s",
            "must be at least 10",
        ),
        ('kind = "celery"\nbroker_url = "redis://h/0"\nlease_s = 1', "engine.lease_s", "must be at least 5"),
        (
            'kind = "celery"\nbroker_url = "redis://h/0"\nlease_s = "30s"',
            "engine.lease_s",
            "must be an integer, got a string",
        ),
        ('kind = "celery"\nbroker_url = 6379', "engine.broker_url", "must be a string"),
        ('kind = "celery"\nbroker = "redis://h/0"', "engine.broker", "unknown key"),
    ],
)
def test_engine_problems_name_the_key(tmp_path, engine, key, problem):
    path = with_engine(tmp_path, engine)
    message = load_error(path)
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message, message


def test_engine_problem_is_one_line_and_exit_2_through_check(tmp_path):
    path = with_engine(tmp_path, 'kind = "celery"\nbroker_url = "redis://127.0.0.1:99999/0"')
    result = CliRunner().invoke(main, ["--config", path, "check"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: engine.broker_url: "), lines
    assert "Traceback" not in result.output
    for args in (["run", "--once"], ["worker"], ["status"]):  # nothing runs on a bad config
        result = CliRunner().invoke(main, ["--config", path, *args])
        assert result.exit_code == 2 and "engine.broker_url" in result.output, (args, result.output)


@pytest.mark.parametrize("password", ["s3cret-Passw0rd", "pw1", "p%40ss"])
@pytest.mark.parametrize("key", ["broker_url", "result_backend"])
def test_a_broker_password_is_never_printed(tmp_path, password, key):
    bad = f"redis://:{password}@127.0.0.1:6379/zero"
    engine = (
        f'kind = "celery"\nbroker_url = "{bad}"'
        if key == "broker_url"
        else f'kind = "celery"\nbroker_url = "redis://h/0"\n{key} = "{bad}"'
    )
    path = with_engine(tmp_path, engine)
    message = load_error(path)
    assert f"engine.{key}" in message and "database 'zero'" in message
    assert password not in message and ":***@127.0.0.1" in message, message
    result = CliRunner().invoke(main, ["--config", path, "check"])
    assert result.exit_code == 2 and password not in result.output


def test_a_loaded_broker_password_is_registered_as_a_secret(tmp_path):
    path = with_engine(tmp_path, 'kind = "celery"\nbroker_url = "redis://app:Brok3r-Secret@10.1.1.1:6379/0"')
    cfg = config.load(path)
    assert "Brok3r-Secret" not in redact.redact(f"engine: {cfg.engine}")


# ---- one mirror file per source ------------------------------------------------------------------


def test_source_field_gives_one_mirror_and_token_file_per_source(tmp_path):
    path = with_engine(tmp_path, 'kind = "local"', storage=f'path = "{tmp_path}/mirrors/{{source}}.db"')
    cfg = config.load(path)
    assert cfg.per_source
    main_cfg = cfg.scoped("main")
    assert main_cfg.storage_path == f"{tmp_path}/mirrors/main.db"
    assert main_cfg.token_path == f"{tmp_path}/mirrors/main.db.tokens.json"
    assert [s.name for s in main_cfg.sources] == ["main"]
    assert [s.name for s in cfg.sources] == ["main", "b24"]  # the whole config is untouched
    scopes = cfg.scopes()
    assert [(c.storage_path, [s.name for s in c.sources]) for c in scopes] == [
        (f"{tmp_path}/mirrors/main.db", ["main"]),
        (f"{tmp_path}/mirrors/b24.db", ["b24"]),
    ]
    with pytest.raises(ConfigError, match="no source named 'nope'"):
        cfg.scoped("nope")


def test_source_field_in_both_paths(tmp_path):
    storage = f'path = "{tmp_path}/{{source}}/mirror.db"\ntoken_path = "{tmp_path}/secrets/{{source}}.json"'
    cfg = config.load(with_engine(tmp_path, 'kind = "local"', storage=storage))
    b24 = cfg.scoped("b24")
    assert (b24.storage_path, b24.token_path) == (f"{tmp_path}/b24/mirror.db", f"{tmp_path}/secrets/b24.json")


def test_a_shared_mirror_file_scopes_to_the_whole_config(tmp_path):
    cfg = config.load(with_engine(tmp_path, 'kind = "local"'))
    assert not cfg.per_source
    assert cfg.scoped("b24") is cfg and cfg.scopes() == [cfg]
    assert [s.name for s in cfg.scoped("b24").sources] == ["main", "b24"]


@pytest.mark.parametrize(
    "storage, key, problem",
    [
        ('path = "mirrors/{name}.db"', "storage.path", "the only field a path may hold is {source}"),
        ('path = "mirrors/{source.db"', "storage.path", "the only field a path may hold is {source}"),
        ('path = "mirrors/{source}}.db"', "storage.path", "the only field a path may hold is {source}"),
        ('path = "mirrors/{}.db"', "storage.path", "the only field a path may hold is {source}"),
        ('path = "mirrors/{SOURCE}.db"', "storage.path", "the only field a path may hold is {source}"),
        (
            'path = "m/{source}.db"\ntoken_path = "t/{kind}.json"',
            "storage.token_path",
            "the only field a path may hold is {source}",
        ),
        (
            'path = "mirror.db"\ntoken_path = "tokens/{source}.json"',
            "storage.token_path",
            "holds {source} but [storage] path does not",
        ),
    ],
)
def test_bad_path_fields_are_refused(tmp_path, storage, key, problem):
    path = with_engine(tmp_path, 'kind = "local"', storage=storage)
    message = load_error(path)
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message, message


# ---- [[sources]] queue -------------------------------------------------------------------------


def test_queue_routes_a_source(tmp_path):
    sources = SOURCES.replace('kind = "bitrix24"', 'kind = "bitrix24"\nqueue = "b24-eu.slow:1"')
    cfg = config.load(with_engine(tmp_path, 'kind = "celery"\nbroker_url = "redis://h/0"', sources=sources))
    assert [s.queue for s in cfg.sources] == [DEFAULT_QUEUE, "b24-eu.slow:1"]


@pytest.mark.parametrize(
    "queue, shown",
    [
        ('""', "''"),
        ('"two words"', "'two words'"),
        ('"q/1"', "'q/1'"),
        ('"очередь"', "'очередь'"),
        (f'"{"q" * 101}"', "'" + "q" * 101 + "'"),
    ],
)
def test_bad_queue_names_are_refused(tmp_path, queue, shown):
    sources = SOURCES.replace('kind = "bitrix24"', f'kind = "bitrix24"\nqueue = {queue}')
    path = with_engine(tmp_path, 'kind = "celery"\nbroker_url = "redis://h/0"', sources=sources)
    message = load_error(path)
    assert message.startswith(f"{path}: sources[1] (b24).queue: must be a queue name"), message
    assert f"got {shown}" in message


def test_a_queue_that_is_not_a_string_is_refused(tmp_path):
    sources = SOURCES.replace('kind = "amocrm"', 'kind = "amocrm"\nqueue = 7')
    path = with_engine(tmp_path, 'kind = "local"', sources=sources)
    message = load_error(path)
    assert message.startswith(f"{path}: sources[0].queue: must be a string"), message
