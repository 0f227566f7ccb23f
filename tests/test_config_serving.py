"""The production server's settings in xmrt/config.py: DATABASE_URI, REDIS_URI, XMRT_POSTGRES_PORT, heartbeat."""

from __future__ import annotations

import pytest

from xmrt.config import ConfigError, create_config
from xmrt.server.postgres import EmbeddedPostgres


def cfg(**env: str):
    return create_config({"XMRT_DATA_DIR": "/tmp/xmrt-config-test", **env}, env_file=None)


def test_defaults_are_the_embedded_postgres_and_database_1_of_the_redis():
    c = cfg()
    assert c.database_uri is None and not c.postgres_external and c.embedded_postgres_port == 5490
    assert str(EmbeddedPostgres.from_config(c).directory) == "/tmp/xmrt-config-test/postgres"
    assert c.runtime_redis == "redis://127.0.0.1:6390/1" and c.run_heartbeat_seconds == 5.0
    assert cfg(REDIS_URL="redis://:pw@cache:6379/0").runtime_redis == "redis://:pw@cache:6379/1"
    assert cfg(REDIS_URL="rediss://cache").runtime_redis == "rediss://cache/1"


def test_external_servers_and_overrides():
    c = cfg(DATABASE_URI="postgresql://u:secret@db:5432/xmrt", REDIS_URI="redis://other:6379/4",
            XMRT_POSTGRES_PORT="6000", LG_BG_JOB_HEARTBEAT="10")
    assert c.postgres_external and c.database_uri.endswith("@db:5432/xmrt")
    assert "secret" not in repr(c)
    assert c.runtime_redis == "redis://other:6379/4" and c.run_heartbeat_seconds == 10.0
    assert c.embedded_postgres_port == 6000
    assert cfg(DATABASE_URI="postgres+asyncpg://u@db/x").postgres_external


def test_the_development_servers_placeholders_mean_unset():
    # `langgraph dev` exports DATABASE_URI=":memory:" and REDIS_URI="fake" for its in-memory runtime.
    c = cfg(DATABASE_URI=":memory:", REDIS_URI="fake")
    assert c.database_uri is None and c.runtime_redis == "redis://127.0.0.1:6390/1"


@pytest.mark.parametrize(("env", "needle"), [
    ({"DATABASE_URI": "mysql://u@db/x"}, "DATABASE_URI"),
    ({"DATABASE_URI": "postgresql://u@db:99999/x"}, "DATABASE_URI"),
    ({"DATABASE_URI": "postgresql:///x"}, "DATABASE_URI has no host"),
    ({"REDIS_URI": "http://x"}, "REDIS_URI"),
    ({"XMRT_POSTGRES_PORT": "0"}, "XMRT_POSTGRES_PORT"),
    ({"LG_BG_JOB_HEARTBEAT": "0.5"}, "LG_BG_JOB_HEARTBEAT"),
    ({"LG_BG_JOB_HEARTBEAT": "often"}, "LG_BG_JOB_HEARTBEAT"),
])
def test_invalid_values_name_the_variable(env, needle):
    with pytest.raises(ConfigError, match=needle):
        cfg(**env)
