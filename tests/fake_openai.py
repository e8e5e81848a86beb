"""A fake OpenAI-compatible server (http.server in a thread) for the serve tests.

It answers what ppbench and `vllm bench serve` ask: /health, vLLM's /version, /v1/models and a
streamed /v1/completions (server-sent events, a final usage chunk, `[DONE]`), with knobs that
make a bad server: fewer tokens than `max_tokens` (`short_by`), or HTTP 500 for every
`fail_every`-th request. It stands in only where the server's answers are what is tested.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI(BaseHTTPRequestHandler):
    models = ("tiny",)
    health = 200
    short_by = 0  # tokens fewer than max_tokens in every answer
    fail_every = 0  # every n-th completion answers HTTP 500 (0: never)
    counter = itertools.count(1)

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path == "/health":
            self._json(self.health, {})
        elif self.path == "/version":
            self._json(200, {"version": "0.0.0-fake"})
        elif self.path == "/v1/models":
            data = [{"id": m, "object": "model", "owned_by": "vllm", "max_model_len": 512} for m in self.models]
            self._json(200, {"object": "list", "data": data})
        else:
            self._json(404, {})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path != "/v1/completions":
            return self._json(404, {})
        n = next(self.counter)
        if self.fail_every and n % self.fail_every == 0:
            return self._json(500, {"error": "fake failure"})
        tokens = max(int(body.get("max_tokens", 1)) - self.short_by, 0)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
        for _ in range(tokens):
            self._event({"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": " w1"}]})
            time.sleep(0.001)
        prompt = body.get("prompt", "")
        usage = {"prompt_tokens": len(str(prompt).split()), "completion_tokens": tokens}
        self._event({"id": "x", "object": "text_completion", "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")

    def _event(self, obj):
        self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
        self.wfile.flush()

    def _json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def start(**knobs) -> tuple[ThreadingHTTPServer, str]:
    handler = type("Handler", (FakeOpenAI,), {**knobs, "counter": itertools.count(1)})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"
