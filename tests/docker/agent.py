"""A stdlib-only workspace agent for the docker backend's tests (baked into molecule-box-test-agent-*).

It does what a workspace-template agent does, minimally: reads the token the box
pre-wrote to /configs/.auth_token (else MOLECULE_WORKSPACE_TOKEN, as a control-plane
instance or a remote agent gets it), registers with PLATFORM_URL as
http://127.0.0.1:$PORT, heartbeats, serves its agent card at both well-known
paths and answers A2A ``message/send`` with an echo.

Test knobs (environment, i.e. workspace secrets):
- TEST_AGENT_EXIT=<code>: print a line and exit with that code at once (a crash loop);
- TEST_AGENT_HEARTBEAT=<seconds>: heartbeat interval (default 1.5).
``POST /_test/health`` with ``{"ok": false}`` makes the card endpoints answer 503 (the container goes
unhealthy), ``{"ok": true}`` heals it.
"""

import json
import os
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8000"))
WORKSPACE_ID = os.environ.get("WORKSPACE_ID", "")
PLATFORM_URL = os.environ.get("PLATFORM_URL", "").rstrip("/")
STARTED = time.monotonic()
STATE = {"healthy": True}


def log(message):
    print(f"test-agent {WORKSPACE_ID[:8]}: {message}", flush=True)


def token():
    try:
        with open("/configs/.auth_token") as f:
            return f.read().strip()
    except OSError:
        return os.environ.get("MOLECULE_WORKSPACE_TOKEN", "")


def card():
    return {"name": f"test-agent-{WORKSPACE_ID[:8]}", "description": "molecule-box docker test agent",
            "url": f"http://127.0.0.1:{PORT}", "version": "1.0.0", "capabilities": {"streaming": False},
            "defaultInputModes": ["text"], "defaultOutputModes": ["text"], "skills": []}


def post(path, body):
    request = urllib.request.Request(PLATFORM_URL + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {token()}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


def lifecycle():
    interval = float(os.environ.get("TEST_AGENT_HEARTBEAT", "1.5"))
    while True:
        try:
            post("/registry/register", {"id": WORKSPACE_ID, "url": f"http://127.0.0.1:{PORT}", "agent_card": card()})
            log("registered")
            break
        except Exception as exc:
            log(f"register failed: {exc}")
            time.sleep(0.5)
    while True:
        time.sleep(interval)
        try:
            post("/registry/heartbeat", {"workspace_id": WORKSPACE_ID, "uptime_seconds": time.monotonic() - STARTED})
        except Exception as exc:
            log(f"heartbeat failed: {exc}")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path in ("/.well-known/agent-card.json", "/.well-known/agent.json"):
            if STATE["healthy"]:
                self.reply(200, card())
            else:
                self.reply(503, {"error": "unhealthy on purpose"})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/_test/health":
            STATE["healthy"] = bool(body.get("ok"))
            self.reply(200, {"healthy": STATE["healthy"]})
            return
        if body.get("method") == "message/send":
            message = (body.get("params") or {}).get("message") or {}
            text = "".join(p.get("text", "") for p in message.get("parts") or [] if isinstance(p, dict))
            self.reply(200, {"jsonrpc": "2.0", "id": body.get("id"), "result": {
                "kind": "message", "role": "agent", "messageId": f"echo-{message.get('messageId', '')}",
                "parts": [{"kind": "text", "text": f"echo: {text}"}]}})
            return
        self.reply(200, {"jsonrpc": "2.0", "id": body.get("id"),
                         "error": {"code": -32601, "message": "method not found"}})


def main():
    code = os.environ.get("TEST_AGENT_EXIT")
    if code:
        log(f"exiting with code {code} as asked (TEST_AGENT_EXIT)")
        sys.exit(int(code))
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    threading.Thread(target=lifecycle, daemon=True).start()
    log(f"serving on port {PORT}")
    server.serve_forever()


if __name__ == "__main__":
    main()
