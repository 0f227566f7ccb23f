"""The lockdown probes of tests/test_lockdown.py, against the production server (``xmrt serve``: stock langgraph-api
on langgraph-runtime-pg, 2 worker processes, Postgres + Redis).

Every test of test_lockdown.py except the development server's kill-and-restart one (production crashes are
tested in tests/test_production.py) runs here again, unchanged, with this module's ``locked`` fixture. The route
walk takes its table from the development server's build, which has the same API routes plus its own
``/internal`` and ``/deploy`` ones; here those answer 401 without a key and 404 with one, like everywhere.
"""

from __future__ import annotations

import pytest

from tests import test_lockdown
from tests.conftest import free_port, make_config
from tests.fake_openai import FakeOpenAI
from tests.served import ProductionServer, fresh_database, langgraph_config_with, server_env
from tests.test_lockdown import KEYS

globals().update({name: getattr(test_lockdown, name) for name in dir(test_lockdown)
                  if name.startswith("test_") and name != "test_a_server_killed_mid_run_starts_again_and_serves"})


@pytest.fixture(scope="module")
def locked(redis_server, postgres_server, tmp_path_factory):
    """(server, config, fake model, langgraph.json path, tmp) with three users' keys, in production mode."""
    tmp = tmp_path_factory.mktemp("lockdown-production")
    roots = tmp / "roots"
    (roots / "docs").mkdir(parents=True)
    (roots / "docs" / "treasury.md").write_text("# Treasury\nAny spending above 100 XMR needs a governance vote.\n")
    (tmp / "outside").mkdir()
    (tmp / "outside" / "secret.md").write_text("# Secret\nThe admin password is hunter2.\n")
    extra = {"XMRT_API_KEYS": KEYS, "XMRT_INGEST_ROOTS": str(roots)}
    config = make_config(tmp / "data", redis_server.port, XMRT_KEY_PREFIX=f"lockp{free_port()}", **extra)
    lg_config = langgraph_config_with(tmp, {"echo": "./tests/served_graphs.py:graph"})
    with FakeOpenAI("I am a scripted model and I only repeat this sentence.") as fake:
        env = {**server_env(config), **extra, **fake.env()}
        server = ProductionServer(env, tmp / "xmrt-serve.log", database_uri=fresh_database(postgres_server),
                                  config_path=lg_config, workers=2, jobs=16).start()
        try:
            yield server, config, fake, lg_config, tmp
        except Exception:
            print(server.tail())
            raise
        finally:
            server.stop()
