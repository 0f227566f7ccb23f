"""The registry of components and their state, in Redis: what the orchestrator ran, how often, how it went.

One hash, ``<prefix>:registry``: component name → JSON ``{status, last_run_at, last_error, runs, errors,
avg_ms, last_ms}``. ``status`` is ``registered`` (known, never run), ``ok`` (the last run succeeded),
``error`` (it failed; ``last_error`` says why) or ``unavailable`` (its module is missing). Each update is one
atomic Lua script, so concurrent processes never lose a run.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from xmrt.config import Config
from xmrt.redis.clients import redis_client

#: ARGV: name, ok (1/0), ms, now, error text, status override ("" = ok/error).
_RECORD = """
local function num(v) if type(v) == 'number' then return v end return 0 end
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local rec = {}
if raw then rec = cjson.decode(raw) end
local runs = num(rec['runs'])
local avg = num(rec['avg_ms'])
local ms = tonumber(ARGV[3])
runs = runs + 1
avg = avg + (ms - avg) / runs
rec['runs'] = runs
rec['avg_ms'] = math.floor(avg * 1000 + 0.5) / 1000
rec['last_ms'] = math.floor(ms * 1000 + 0.5) / 1000
rec['last_run_at'] = tonumber(ARGV[4])
if ARGV[2] == '1' then
    rec['status'] = 'ok'
else
    rec['status'] = 'error'
    rec['errors'] = num(rec['errors']) + 1
    rec['last_error'] = ARGV[5]
end
if ARGV[6] ~= '' then rec['status'] = ARGV[6] end
if type(rec['errors']) ~= 'number' then rec['errors'] = 0 end
local out = cjson.encode(rec)
redis.call('HSET', KEYS[1], ARGV[1], out)
return out
"""

MAX_ERROR = 500


def registry_key(config: Config) -> str:
    """The registry hash."""
    return f"{config.key_prefix}:registry"


class Registry:
    """Components and their state (see the module docstring)."""

    def __init__(self, config: Config, client: redis.Redis | None = None) -> None:
        self.r = client or redis_client(config)
        self.key = registry_key(config)
        self._record = self.r.register_script(_RECORD)

    def register(self, name: str, status: str = "registered", **extra: Any) -> None:
        """Add a component if it is new; an existing record is kept (only an "unavailable" status overrides it)."""
        record = {"status": status, "last_run_at": None, "last_error": None, "runs": 0, "errors": 0,
                  "avg_ms": None, **extra}
        if not self.r.hsetnx(self.key, name, json.dumps(record)) and status == "unavailable":
            current = self.get(name) or {}
            self.r.hset(self.key, name, json.dumps({**current, "status": status, **extra}))

    def record(self, name: str, ok: bool, ms: float, error: str | None = None, status: str = "") -> dict[str, Any]:
        """Count one run of a component: its outcome and duration (atomically)."""
        raw = self._record(keys=[self.key],
                           args=[name, "1" if ok else "0", f"{ms:.3f}", f"{time.time():.3f}",
                                 (error or "")[:MAX_ERROR], status])
        return json.loads(raw)

    def get(self, name: str) -> dict[str, Any] | None:
        """One component's record."""
        raw = self.r.hget(self.key, name)
        return json.loads(raw) if raw else None

    def all(self) -> dict[str, dict[str, Any]]:
        """Every component, by name."""
        out = {}
        for k, v in self.r.hgetall(self.key).items():
            out[k.decode() if isinstance(k, bytes) else k] = json.loads(v)
        return dict(sorted(out.items()))


def read_registry(config: Config, client: redis.Redis | None = None) -> dict[str, dict[str, Any]]:
    """Every registered component and its state (for ``xmrt status`` and ``/status``)."""
    return Registry(config, client or redis_client(config, fail_fast=True)).all()  # a status answers fast
