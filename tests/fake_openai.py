"""A scripted OpenAI-compatible chat server for tests: the real ``openai`` provider path, no real model.

``/v1/chat/completions`` answers every request with a scripted reply, streamed as server-sent events when the
request asks for ``stream``. The default reply quotes the first line of the system prompt's memories (so a test
can see what the graph gave the model) and says it is scripted. Requests are counted.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    """``with FakeOpenAI() as fake: env["OPENAI_BASE_URL"] = fake.url``."""

    def __init__(self, reply: str = "This is a scripted reply.", delay: float = 0.0) -> None:
        self.reply = reply
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server's naming
                body = json.dumps({"data": [{"id": "scripted", "object": "model"}]}).encode()
                self._send(200, body, "application/json")

            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append(request)
                time.sleep(server.delay)
                text = server.reply
                created = int(time.time())
                if request.get("stream"):
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.end_headers()
                    for word in text.split(" "):
                        chunk = {"id": "c1", "object": "chat.completion.chunk", "created": created,
                                 "model": "scripted", "choices": [{"index": 0, "delta": {"content": word + " "},
                                                                   "finish_reason": None}]}
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    done = {"id": "c1", "object": "chat.completion.chunk", "created": created, "model": "scripted",
                            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                    self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
                    return
                body = {"id": "c1", "object": "chat.completion", "created": created, "model": "scripted",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": text}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                self._send(200, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def env(self) -> dict[str, str]:
        """The variables that point the project's ``openai`` provider here."""
        return {"OPENAI_BASE_URL": self.url, "OPENAI_API_KEY": "scripted-key", "RAGLIGHT_LLM_MODEL": "scripted"}
