"""A stand-in for the Hugging Face Hub on 127.0.0.1, speaking the few HTTP endpoints that
`huggingface_hub` uses to create a repository, commit files and download a snapshot, so that the
real client runs end to end without a network."""

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COMMIT = "c0ffee" * 6 + "c0ff"


class FakeHub:
    """Records every request; `uploads` holds committed files, `models` serves downloads."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.uploads: dict[str, bytes] = {}
        self.commits: list[dict[str, Any]] = []
        self.created: list[dict[str, Any]] = []
        self.models: dict[str, dict[str, bytes]] = {}
        self.fail_status: int | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self.route("HEAD")

            def do_GET(self) -> None:
                self.route("GET")

            def do_POST(self) -> None:
                self.route("POST")

            def do_PUT(self) -> None:
                self.route("PUT")

            def route(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?")[0]
                hub.requests.append(
                    {
                        "method": method,
                        "path": path,
                        "headers": {key.lower(): value for key, value in self.headers.items()},
                        "body": body,
                    }
                )
                if path.startswith("/api/") and hub.fail_status:
                    return self.reply(hub.fail_status, {"error": "refused by the fake Hub"})
                status, payload, headers = hub.answer(method, path, body)
                self.reply(status, payload, headers, send_body=method != "HEAD")

            def reply(self, status: int, payload: Any, headers: dict | None = None, send_body: bool = True) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if send_body:
                    self.wfile.write(data)

        return Handler

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, Any, dict | None]:
        if path == "/api/repos/create":
            request = json.loads(body)
            self.created.append(request)
            repo_id = "/".join(filter(None, (request.get("organization"), request["name"])))
            return 200, {"url": f"{self.url}/{repo_id}"}, None
        if path == "/api/validate-yaml" or path.endswith("/settings"):
            return 200, {}, None
        if "/preupload/" in path:
            files = json.loads(body)["files"]
            modes = [{"path": item["path"], "uploadMode": "regular", "shouldIgnore": False} for item in files]
            return 200, {"files": modes}, None
        if "/commit/" in path:
            repo_id = path.removeprefix("/api/models/").split("/commit/")[0]
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "header":
                    self.commits.append(item["value"])
                elif item["key"] == "file":
                    self.uploads[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            return 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{COMMIT}", "commitOid": COMMIT}, None
        if path.startswith("/api/models/") and "/tree/" in path:
            repo_id = path.removeprefix("/api/models/").split("/tree/")[0]
            files = self.models.get(repo_id, {})
            tree = [
                {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                for name, data in files.items()
            ]
            return 200, tree, None
        if path.startswith("/api/models/") and method == "GET":
            repo_id = path.removeprefix("/api/models/").split("/revision/")[0]
            if repo_id not in self.models:
                return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
            siblings = [{"rfilename": name} for name in self.models[repo_id]]
            return 200, {"id": repo_id, "modelId": repo_id, "sha": COMMIT, "siblings": siblings}, None
        if "/resolve/" in path:
            repo_id, rest = path.lstrip("/").split("/resolve/")
            filename = rest.split("/", 1)[1]
            content = self.models.get(repo_id, {}).get(filename)
            if content is None:
                return 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"}
            headers = {
                "X-Repo-Commit": COMMIT,
                "ETag": f'"{hashlib.sha1(content).hexdigest()}"',
                "Content-Type": "application/octet-stream",
            }
            return 200, content, headers
        return 404, {"error": f"no route for {method} {path}"}, None
