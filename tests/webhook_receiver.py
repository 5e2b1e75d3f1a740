"""A webhook receiver on 127.0.0.1 for tests: records what it is sent, answers as scripted."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """`statuses`: the answers to give in turn (the last one repeats), e.g. [500, 500, 200]."""

    def __init__(self, statuses: list[int] | None = None):
        self.statuses = list(statuses or [200])
        self.received: list[dict] = []  # {"body": str, "headers": dict, "status": int}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
                with receiver._lock:
                    status = receiver.statuses[min(len(receiver.received), len(receiver.statuses) - 1)]
                    receiver.received.append({"body": body, "headers": dict(self.headers), "status": status})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.received]

    def acknowledged(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.received if 200 <= r["status"] < 300]
