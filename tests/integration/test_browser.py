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
from xmpptest import ROOT, close, insecure_tls_context, login, run

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


def _page_server(stack, support, extra=None):
    """The web site: Converse's files, three pages (plus `extra`: name →
    Converse settings), and its back-end's /prebind."""
    bosh = "http://127.0.0.1:%d/http-bind" % web_port(stack)
    ws = "ws://127.0.0.1:%d/xmpp-websocket" % web_port(stack)
    anon = anon_domain(stack)
    configs = {
        "ws": {"authentication": "anonymous", "jid": anon, "websocket_url": ws},
        "bosh": {"authentication": "anonymous", "jid": anon, "bosh_service_url": bosh},
        "prebind": {"authentication": "prebind", "prebind_url": "/prebind",
                    "bosh_service_url": bosh},
    }
    configs.update(extra or {})

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


# ---- a room and a file: converse_steps.js ---------------------------------------------

def _steps(stack, srv, page, shot, steps):
    """Start the browser on page with the steps; returns the process."""
    return asyncio.create_subprocess_exec(
        "node", os.path.join(BROWSER_DIR, "converse_steps.js"),
        "http://127.0.0.1:%d/%s.html" % (srv.server_address[1], page), shot, json.dumps(steps),
        cwd=BROWSER_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _finish(proc, timeout=100):
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("the browser run did not finish within %d s" % timeout)
    assert proc.returncode == 0, (out.decode() + err.decode())[-4000:]


def _login_page(stack, jid, pw, **more):
    cfg = {"authentication": "login", "jid": jid, "password": pw,
           "websocket_url": "ws://127.0.0.1:%d/xmpp-websocket" % web_port(stack),
           "auto_join_private_chats": []}
    cfg.update(more)
    return cfg


def test_converse_user_chats_in_a_room_with_a_slixmpp_occupant(stack, browser_ready, new_user):
    """A registered Converse.js user (WebSocket) joins a room on sb-muc at
    conference.DOMAIN; its message reaches a slixmpp occupant, whose
    answer shows in the page."""
    from test_muc import Inbox, groupchat, is_msg, is_pres, join, new_room
    wjid, wpw = new_user("webmuc")
    room = new_room(stack, "web")
    token = secrets.token_hex(3)
    text, answer = "hello room %s" % token, "welcome web %s" % token
    page = _login_page(stack, wjid, wpw, auto_join_rooms=[{"jid": room, "nick": "web"}])
    srv = _page_server(stack, "nobody@" + stack.domain, {"muc": page})
    shot = os.path.join(ARTIFACTS, "converse-muc.png")

    async def go():
        ojid, opw = new_user("occ")
        occ = await login(stack, ojid, opw, instance="c2s2")
        occ.box = Inbox(occ)
        try:
            await join(occ, room, "slix")
            proc = await _steps(stack, srv, "muc", shot, [{"send": text}, {"see": answer}])
            try:
                await occ.box.wait(is_pres(room + "/web"), 60, "the web user in the room")
                got = await occ.box.wait(is_msg(room + "/web", text, "groupchat"), 40,
                                         "the web user's message")
                assert got.get("type") == "groupchat"
                groupchat(occ, room, answer)
            finally:
                await _finish(proc)
        finally:
            await close(occ)
    try:
        run(go(), timeout=150)
    finally:
        srv.shutdown()


def test_converse_creates_a_room_that_a_slixmpp_user_can_then_enter(stack, browser_ready,
                                                                    new_user):
    """Converse.js auto-joining a room that does not exist creates it (201):
    the room is locked until its creator accepts the defaults (XEP-0045
    §10.1.2), which Converse does by itself (an instant room), so a slixmpp
    user joining after it gets in — not item-not-found — and the two chat."""
    from test_muc import Inbox, codes, err, groupchat, iq, is_msg, is_pres, item, new_room
    wjid, wpw = new_user("webmk")
    room = new_room(stack, "webnew")
    token = secrets.token_hex(3)
    text, answer = "I made it %s" % token, "I came in %s" % token
    page = _login_page(stack, wjid, wpw, auto_join_rooms=[{"jid": room, "nick": "maker"}])
    srv = _page_server(stack, "nobody@" + stack.domain, {"mucnew": page})
    shot = os.path.join(ARTIFACTS, "converse-muc-created.png")

    async def go():
        ojid, opw = new_user("occ")
        occ = await login(stack, ojid, opw, instance="c2s2")
        occ.box = Inbox(occ)
        try:
            proc = await _steps(stack, srv, "mucnew", shot, [{"send": text}, {"see": answer}])
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 60
                me = "%s/slix" % room
                while True:                 # until Converse made it (disco#info answers)
                    _, cond = await iq(occ, room, "get",
                                       "<query xmlns='http://jabber.org/protocol/disco#info'/>")
                    if cond is None:
                        break
                    assert cond == "item-not-found", cond
                    assert loop.time() < deadline, "Converse never created the room"
                    await asyncio.sleep(0.3)
                while True:                 # locked: item-not-found
                    occ.send_raw("<presence to='%s'><x xmlns='http://jabber.org/protocol/muc'/>"
                                 "</presence>" % me)
                    e = await occ.box.wait(lambda e: is_pres(me)(e) or is_pres(me, "error")(e),
                                           20, "an answer to the join")
                    if e.get("type") != "error":
                        break
                    assert err(e) == "item-not-found", err(e)
                    assert loop.time() < deadline, "the room was never unlocked"
                    await asyncio.sleep(0.5)
                assert "110" in codes(e) and "201" not in codes(e)
                assert item(e).get("affiliation") == "none"
                maker = await occ.box.wait(is_pres(room + "/maker"), 10, "the creator")
                assert item(maker).get("affiliation") == "owner"
                # its message, live or from the history on join
                await occ.box.wait(is_msg(room + "/maker", text, "groupchat"), 40,
                                   "the web user's message")
                groupchat(occ, room, answer)
            finally:
                await _finish(proc)
        finally:
            await close(occ)
    try:
        run(go(), timeout=150)
    finally:
        srv.shutdown()


def test_converse_sends_a_file_with_http_upload(stack, browser_ready, new_user, tmp_path):
    """Converse.js finds upload.DOMAIN, PUTs a file to the slot's https URL
    on sb-bosh's TLS listener (test certificate), and sends the GET URL;
    the slixmpp receiver's GET of it returns the same bytes."""
    import http.client
    import urllib.parse
    wjid, wpw = new_user("webup")
    rjid, rpw = new_user("rcv")
    data = ("file from the browser %s\n" % secrets.token_hex(8)).encode() * 40
    f = tmp_path / "notes.txt"
    f.write_bytes(data)
    base = "https://localhost:%s/upload/" % stack.env["SB_BOSH_TLS_PORT"]
    page = _login_page(stack, wjid, wpw, auto_join_private_chats=[rjid])
    srv = _page_server(stack, "nobody@" + stack.domain, {"upload": page})
    shot = os.path.join(ARTIFACTS, "converse-upload.png")

    async def go():
        rcv = await login(stack, rjid, rpw, instance="c2s2")
        urls = []
        rcv.add_event_handler("message", lambda m: urls.append(m["body"])
                              if m["body"].startswith("https://") else None)
        try:
            proc = await _steps(stack, srv, "upload", shot,
                                [{"upload": str(f)}, {"seeLink": base}])
            await _finish(proc)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while not urls and loop.time() < deadline:
                await asyncio.sleep(0.1)
            return urls
        finally:
            await close(rcv)
    try:
        urls = run(go(), timeout=150)
    finally:
        srv.shutdown()
    assert urls, "the receiver got no message with an https URL"
    u = urllib.parse.urlsplit(urls[0])
    assert urls[0].startswith(base) and u.path.endswith("/notes.txt"), urls
    c = http.client.HTTPSConnection("127.0.0.1", int(stack.env["SB_BOSH_TLS_PORT"]), timeout=10,
                                    context=insecure_tls_context())
    try:
        c.request("GET", u.path)
        r = c.getresponse()
        assert (r.status, r.read()) == (200, data)
    finally:
        c.close()
