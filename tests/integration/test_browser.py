"""The web chat support use case in a real browser: a local page with
Converse.js (npm, tests/browser) in headless Debian Chromium logs a visitor
in — anonymously over WebSocket, anonymously over BOSH, and through a
pre-bound BOSH session made by the page's own back-end — the visitor writes
to support@localhost (a slixmpp client on TCP), the desk answers, and the
answer must appear in the page's DOM. Screenshots: tests/artifacts/."""

import asyncio
import functools
import http.server
import json
import os
import secrets
import shutil
import threading

import pytest

from webtest import anon_domain, prebind, web_port
from xmpptest import ROOT, close, login, run

BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
DIST = os.path.join(BROWSER_DIR, "node_modules", "converse.js", "dist")
ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Switchboard chat support (%(mode)s)</title>
<link rel="stylesheet" href="/dist/converse.min.css">
<script src="/dist/converse.min.js"></script></head>
<body><script>
converse.initialize(Object.assign({
  assets_path: '/dist/',
  auto_login: true,
  view_mode: 'fullscreen',
  auto_join_private_chats: ['%(support)s'],
  discover_connection_methods: false,
  play_sounds: false,
  show_desktop_notifications: false,
  i18n: 'en',
  loglevel: 'info'
}, %(config)s));
</script></body></html>
"""


def _support(stack):
    with open(os.path.join(stack.env["SB_VAR"], "demo-passwords")) as f:
        for line in f:
            jid, _, pw = line.strip().partition(" ")
            if jid == "support@" + stack.domain:
                return jid, pw
    pytest.skip("no support account in this stack")


def _page_server(stack, support):
    """The web site: Converse's files, three pages, and its back-end's /prebind."""
    bosh = "http://127.0.0.1:%d/http-bind" % web_port(stack)
    ws = "ws://127.0.0.1:%d/xmpp-websocket" % web_port(stack)
    anon = anon_domain(stack)
    configs = {
        "ws": {"authentication": "anonymous", "jid": anon, "websocket_url": ws},
        "bosh": {"authentication": "anonymous", "jid": anon, "bosh_service_url": bosh},
        "prebind": {"authentication": "prebind", "prebind_url": "/prebind",
                    "bosh_service_url": bosh},
    }

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, status, ctype, body):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            path = self.path.split("?")[0]
            if path.endswith(".html") and path[1:-5] in configs:
                mode = path[1:-5]
                self._send(200, "text/html; charset=utf-8", PAGE % {
                    "mode": mode, "support": support, "config": json.dumps(configs[mode])})
            elif path == "/prebind":
                # the page's own back-end: it holds the secret, the browser never does
                st, js = prebind(stack, anon)
                self._send(st, "application/json", json.dumps(js))
            elif path.startswith("/dist/"):
                super().do_GET()
            else:
                self._send(404, "text/plain", "not found")

        def translate_path(self, path):
            rel = path.split("?")[0][len("/dist/"):]
            return os.path.join(DIST, os.path.normpath("/" + rel).lstrip("/"))

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture(scope="module")
def browser_ready():
    if not os.path.isdir(DIST) or not os.path.isdir(
            os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        pytest.skip("npm packages missing: run tests/browser/setup.sh (make test does)")
    if not shutil.which("node") or not os.access("/usr/bin/chromium", os.X_OK):
        pytest.skip("node or /usr/bin/chromium missing (deploy/dev/packages.txt)")
    os.makedirs(ARTIFACTS, exist_ok=True)


@pytest.mark.parametrize("mode", ["ws", "bosh", "prebind"])
def test_converse_visitor_gets_the_support_reply(stack, browser_ready, mode):
    sjid, spw = _support(stack)
    srv = _page_server(stack, sjid)
    token = secrets.token_hex(3)
    text = "hello from %s %s" % (mode, token)
    reply = "support says: " + text
    shot = os.path.join(ARTIFACTS, "converse-%s.png" % mode)

    async def go():
        desk = await login(stack, sjid, spw)
        seen = []

        def on_message(msg):
            if msg["type"] in ("chat", "normal") and msg["body"] == text:
                seen.append(str(msg["from"]))
                desk.send_message(mto=msg["from"], mbody=reply, mtype="chat")
        desk.add_event_handler("message", on_message)
        try:
            proc = await asyncio.create_subprocess_exec(
                "node", os.path.join(BROWSER_DIR, "converse_test.js"),
                "http://127.0.0.1:%d/%s.html" % (srv.server_address[1], mode), text, reply, shot,
                cwd=BROWSER_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            try:
                out, err = await asyncio.wait_for(proc.communicate(), 90)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
                raise AssertionError("the browser run did not finish within 90 s")
            assert proc.returncode == 0, (out.decode() + err.decode())[-3000:]
            assert seen and "@" + anon_domain(stack) + "/" in seen[0], seen
            assert os.path.getsize(shot) > 0
        finally:
            await close(desk)
    try:
        run(go(), timeout=120)
    finally:
        srv.shutdown()
