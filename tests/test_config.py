from pathlib import Path

import pytest

from xmrt.config import ConfigError, create_config


def cfg(**env):
    return create_config({"XMRT_DATA_DIR": "/tmp/xmrt-test", **env}, env_file=None)


def test_defaults_use_embedded_redis_and_local_models():
    c = cfg()
    assert not c.redis_external
    assert c.redis_url == "redis://127.0.0.1:6390/0"
    assert c.embedding_model == "all-MiniLM-L6-v2"
    assert c.llm_provider == "huggingface"
    assert c.vector_store_dir == Path("/tmp/xmrt-test/chroma")
    assert c.key_prefix == "xmrt"


def test_openai_is_chosen_when_a_key_or_base_url_is_set():
    assert cfg(OPENAI_API_KEY="sk-x").llm_provider == "openai"
    assert cfg(OPENAI_BASE_URL="http://127.0.0.1:8000/v1").llm_provider == "openai"
    assert cfg(OPENAI_API_KEY="sk-x", RAGLIGHT_LLM_PROVIDER="huggingface").llm_provider == "huggingface"


def test_external_redis_from_url_and_from_host_variables():
    c = cfg(REDIS_URL="redis://:pw@redis.internal:6400/0")
    assert c.redis_external and c.redis_password == "pw"
    c = cfg(REDIS_HOST="10.0.0.5", REDIS_PORT="6380", REDIS_PASSWORD="p@ss")
    assert c.redis_external
    assert c.redis_url == "redis://:p%40ss@10.0.0.5:6380/0"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"XMRT_REDIS_PORT": "abc"}, "XMRT_REDIS_PORT"),
        ({"XMRT_REDIS_PORT": "70000"}, "XMRT_REDIS_PORT"),
        ({"REDIS_HOST": "h", "REDIS_PORT": "-1"}, "REDIS_PORT"),
        ({"REDIS_DB": "1"}, "REDIS_DB"),
        ({"REDIS_URL": "redis://localhost:6379/2"}, "XMRT_KEY_PREFIX"),
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://localhost:99999"}, "REDIS_URL"),
        ({"RAGLIGHT_LLM_PROVIDER": "anthropic"}, "RAGLIGHT_LLM_PROVIDER"),
        ({"OPENAI_BASE_URL": "localhost:8000"}, "OPENAI_BASE_URL"),
        ({"XMRT_KEY_PREFIX": "a:b"}, "XMRT_KEY_PREFIX"),
        ({"XMRT_CHECKPOINT_TTL_MINUTES": "soon"}, "XMRT_CHECKPOINT_TTL_MINUTES"),
        ({"XMRT_DURABILITY": "maybe"}, "XMRT_DURABILITY"),
    ],
)
def test_invalid_values_name_the_variable(env, needle):
    with pytest.raises(ConfigError, match=needle):
        cfg(**env)


def test_redis_db_error_explains_the_reason_and_the_alternative():
    with pytest.raises(ConfigError) as err:
        cfg(REDIS_DB="3")
    assert "RediSearch" in str(err.value) and "XMRT_KEY_PREFIX" in str(err.value)


def test_env_file_is_read_and_real_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("XMRT_KEY_PREFIX=fromfile\nRAGLIGHT_LLM_MODEL=/models/x.gguf\n")
    c = create_config({"XMRT_DATA_DIR": str(tmp_path)}, env_file=env_file)
    assert c.key_prefix == "fromfile" and c.llm_model == "/models/x.gguf"
    c = create_config({"XMRT_DATA_DIR": str(tmp_path), "XMRT_KEY_PREFIX": "fromenv"}, env_file=env_file)
    assert c.key_prefix == "fromenv"


def test_env_example_documents_every_variable_the_config_reads():
    import re

    source = (Path(__file__).parents[1] / "xmrt" / "config.py").read_text()
    read = set(re.findall(r'"((?:REDIS|RAGLIGHT|OPENAI|GITHUB|XMRT|CHROMA)_[A-Z_]+)"', source))
    example = (Path(__file__).parents[1] / ".env.example").read_text()
    missing = sorted(v for v in read if v not in example)
    assert not missing, f".env.example does not document {missing}"
