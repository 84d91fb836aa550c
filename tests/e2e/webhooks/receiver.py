#!/usr/bin/env python3
"""Webhook receiver for Keygate's end-to-end test (tests/e2e/webhooks.rs).

Listens on 127.0.0.1 on a free port and verifies every delivery with the independent
`standardwebhooks` package (PyPI), never with Keygate's own code. The test drives it on stdin:

    hook <path> <secret> <fail_first>

registers a webhook path with its signing secret. The first <fail_first> attempts of each
message (by webhook-id) to that path are answered 500, later ones 200; -1 answers 503 for ever.
A delivery that does not verify is answered 400.

It writes one JSON object per line to stdout: {"kind": "listening", "port": ...} first, then
{"kind": "registered", ...} per hook line and {"kind": "delivery", ...} per request, with the
headers, the raw body, the attempt number, whether it verified and the status it answered.
It exits when stdin closes (the test is gone).
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

hooks = {}  # path -> (Webhook, fail_first)
attempts = {}  # (path, webhook-id) -> attempts seen
state = threading.Condition()
out = threading.Lock()


def emit(obj):
    with out:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        path = self.path
        msg_id = self.headers.get("webhook-id", "")
        with state:
            # A delivery can race the registration of its path by a few milliseconds.
            state.wait_for(lambda: path in hooks, timeout=5)
            hook, fail_first = hooks.get(path, (None, 0))
            attempts[(path, msg_id)] = attempts.get((path, msg_id), 0) + 1
            attempt = attempts[(path, msg_id)]
        record = {
            "kind": "delivery",
            "path": path,
            "webhook_id": msg_id,
            "webhook_timestamp": self.headers.get("webhook-timestamp", ""),
            "webhook_signature": self.headers.get("webhook-signature", ""),
            "content_type": self.headers.get("content-type", ""),
            "attempt": attempt,
            "body": body.decode("utf-8", "replace"),
        }
        try:
            if hook is None:
                raise WebhookVerificationError("no secret registered for " + path)
            payload = hook.verify(body, {k: v for k, v in self.headers.items()})
            record["verified"] = True
            record["event_id"] = payload.get("event_id", "")
            record["event_type"] = payload.get("event_type", "")
        except Exception as e:  # noqa: BLE001 - any failure to verify is reported to the test
            record["verified"] = False
            record["error"] = f"{type(e).__name__}: {e}"
        if not record["verified"]:
            status = 400
        elif fail_first < 0:
            status = 503
        elif attempt <= fail_first:
            status = 500
        else:
            status = 200
        record["status"] = status
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()
        emit(record)

    def log_message(self, *args):
        pass


def control():
    for line in sys.stdin:
        parts = line.split()
        if len(parts) == 4 and parts[0] == "hook":
            with state:
                hooks[parts[1]] = (Webhook(parts[2]), int(parts[3]))
                state.notify_all()
            emit({"kind": "registered", "path": parts[1]})
    os._exit(0)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A sender that went away mid-request (Keygate killed at the end of a test): report it
        # like everything else instead of printing a traceback.
        emit({"kind": "error", "error": repr(sys.exc_info()[1])})


def main():
    server = Server(("127.0.0.1", 0), Handler)
    emit(
        {
            "kind": "listening",
            "port": server.server_address[1],
            "standardwebhooks": version("standardwebhooks"),
        }
    )
    threading.Thread(target=control, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
