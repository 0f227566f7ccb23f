"""Every graph's context is plain data: serialisable over the API, each field described for Studio."""

from __future__ import annotations

import dataclasses
import json

import pytest

from graphs import agentic_rag, eliza, ingest, memory_agent, orchestrator, rag, rat, self_improve
from xmrt.server.api_checks import RequestRefused, check_context
from xmrt.server.schema_check import check_dataclass

GRAPHS = [agentic_rag, eliza, ingest, memory_agent, orchestrator, rag, rat, self_improve]


@pytest.mark.parametrize("module", GRAPHS, ids=lambda m: m.__name__)
def test_context_is_serialisable_and_described(module):
    schema = module.builder.context_schema
    fields = dataclasses.fields(schema)
    assert all(f.metadata.get("description") for f in fields), [f.name for f in fields if not f.metadata]
    assert "config" not in {f.name for f in fields}  # services come from xmrt.services, never from the context
    data = json.loads(json.dumps(dataclasses.asdict(schema())))  # what a served run's context is
    check_dataclass(data, schema)
    assert dataclasses.asdict(schema(**data)) == dataclasses.asdict(schema()) | data


@pytest.mark.parametrize("graph", ["rag", "eliza", "ingest"])
def test_a_python_object_cannot_come_in_through_the_context(graph):
    """No context has a ``config`` (or any other object) field, so the API refuses one as an unknown setting."""
    with pytest.raises(RequestRefused) as refused:
        check_context(graph, {"config": {"data_dir": "/"}}, None, strict=True)
    assert refused.value.field == "context.config" and "not a setting of this graph" in str(refused.value)
    check_context(graph, None, {"config": {"data_dir": "/"}, "thread_id": "t"}, strict=False)  # not a setting: ignored
