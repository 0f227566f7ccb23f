"""The ingestion graph: a folder, file or git repository into a knowledge-base collection, incrementally.

``resolve_source -> scan_files -> plan_changes -> [index_files -> remove_files] -> finish``. An unchanged
source goes from ``plan_changes`` straight to ``finish`` without loading the embedding model; a source that
only lost files goes to ``remove_files``.

Input: ``{"source": PATH_OR_GIT_URL, "branch": optional, "working_tree": optional}``. Output:
``{"summary": {...}}`` with file counts (added/updated/unchanged/removed/skipped), chunks embedded and
removed, and the skipped files with their reasons. Tunables are on :class:`graphs.context.IngestContext`
(no context: its defaults)::

    graph.invoke({"source": "docs/"}, context=IngestContext(collection="docs", chunk_size=800))
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, NotRequired

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from graphs.context import IngestContext
from graphs.state import Counter
from nodes.ingest import (
    finish,
    index_files_node,
    plan_changes,
    remove_files_node,
    resolve_source,
    route_after_plan,
    scan_files,
)


class IngestInput(TypedDict):
    """What to ingest."""

    source: str
    branch: NotRequired[str | None]
    working_tree: NotRequired[bool]


class IngestOutput(TypedDict):
    """The run's report."""

    summary: dict[str, Any]


class IngestState(TypedDict, total=False):
    """Everything the steps share. Counters and the skipped list accumulate across nodes."""

    source: str
    branch: str | None
    working_tree: bool
    resolved: dict[str, Any]
    started_at: str
    files: list[dict[str, Any]]
    plan: dict[str, Any]
    indexed: list[str]
    skipped: Annotated[list[dict[str, str]], operator.add]
    chunks_embedded: Counter
    chunks_removed: Counter
    summary: dict[str, Any]


builder = StateGraph(IngestState, context_schema=IngestContext, input_schema=IngestInput, output_schema=IngestOutput)
builder.add_sequence([("resolve_source", resolve_source), ("scan_files", scan_files), ("plan_changes", plan_changes)])
builder.add_sequence([("index_files", index_files_node), ("remove_files", remove_files_node), ("finish", finish)])
builder.add_edge(START, "resolve_source")
builder.add_conditional_edges("plan_changes", route_after_plan, ["index_files", "remove_files", "finish"])
builder.add_edge("finish", END)

graph = builder.compile(name="ingest")
