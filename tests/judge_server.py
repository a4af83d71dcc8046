"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for testing the LLM judge offline with the
real openai client.

Each request is matched to a script by a marker text found in its first user message (a record's
instruction, say "case-json"; the longest where several match); the n-th request for a marker gets the
n-th action of its script, the last action repeating. Actions: `reply(text)` answers 200 with that text as
the assistant message, `verdict(...)` a JSON verdict, `error(status)` an error body, `hang(seconds)` answers
only after that long (past the client's timeout). The server records every request (its JSON body and
headers) and the most requests it had in flight at once. With `reject_schema`, a request that sends
`response_format` is refused with a 400, as some servers refuse a JSON schema.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def reply(text: str) -> dict[str, Any]:
    return {"kind": "reply", "text": text}


def verdict(score: int, reason: str = "fine", **dimensions: int) -> dict[str, Any]:
    return reply(json.dumps({"reason": reason, **dimensions, ("overall" if dimensions else "score"): score}))


def error(status: int, message: str = "scripted failure", headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"kind": "error", "status": status, "message": message, "headers": headers or {}}


def hang(seconds: float, text: str = '{"reason": "late", "score": 1}') -> dict[str, Any]:
    return {"kind": "hang", "seconds": seconds, "text": text}


class FakeJudge:
    """`script` maps marker texts to lists of actions; `default` answers requests no marker matches; `delay`
    seconds pass before every answer (to keep requests in flight)."""

    def __init__(
        self,
        script: dict[str, list[dict[str, Any]]] | None = None,
        default: dict[str, Any] | None = None,
        delay: float = 0.0,
        reject_schema: bool = False,
    ) -> None:
        self.script = script or {}
        self.default = default or verdict(50)
        self.delay = delay
        self.reject_schema = reject_schema
        self.requests: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def __enter__(self) -> "FakeJudge":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[dict[str, Any]]:
        return [request["body"] for request in self.requests]

    def requests_for(self, marker: str) -> list[dict[str, Any]]:
        return [request for request in self.requests if request["marker"] == marker]

    def choose(self, body: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
        first = users[0] if users else ""
        found = [marker for marker in self.script if marker in first]
        marker = max(found, key=len) if found else None  # "r10" rather than "r1"
        with self.lock:
            if marker is None:
                return None, self.default
            count = self.counts.get(marker, 0)
            self.counts[marker] = count + 1
            actions = self.script[marker]
            return marker, actions[min(count, len(actions) - 1)]

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw or b"{}")
                marker, action = fake.choose(body)
                with fake.lock:
                    fake.requests.append(
                        {
                            "path": self.path,
                            "body": body,
                            "headers": {key.lower(): value for key, value in self.headers.items()},
                            "marker": marker,
                            "action": action["kind"],
                        }
                    )
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(fake.delay)
                    if self.path.split("?")[0].rstrip("/") != "/v1/chat/completions":
                        self.send(404, {"error": {"message": f"no route {self.path}"}})
                    elif fake.reject_schema and "response_format" in body:
                        self.send(400, {"error": {"message": "response_format is not supported by this server"}})
                    elif action["kind"] == "error":
                        error_body = {"error": {"message": action["message"], "code": action["status"]}}
                        self.send(action["status"], error_body, action["headers"])
                    else:
                        if action["kind"] == "hang":
                            time.sleep(action["seconds"])
                        self.send(200, completion(body, action["text"]))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
