"""sb-bosh: BOSH (XEP-0124/0206) and WebSocket (RFC 7395) protocol rules on
the wire, SASL ANONYMOUS and the anonymous domain's policy, pre-bind, and
web users exchanging messages with TCP users."""

import asyncio
import os
import secrets
import subprocess
import time

import pytest

from webtest import (NS_BIND, NS_BOSH, NS_CLIENT, NS_FRAMING, NS_SASL, NS_STREAM, Bosh,
                     WebSocket, WsClosed, anon_domain, http_request, prebind)
from xmpptest import (redis_cli, RawStream, close, login, next_message, run, sm_for,
                      wait_until)

MSG = "{%s}message" % NS_CLIENT


def _mechs(features):
    return [m.text for m in features.iter("{%s}mechanism" % NS_SASL)]


# ------------------------------------------------------------------ BOSH
def test_bosh_session_creation_answers_with_session_attributes_and_features(stack):
    b = Bosh(stack)
    root = b.create(anon_domain(stack), wait=30, hold=3, ack="1")
    assert root.tag == "{%s}body" % NS_BOSH
    assert len(root.get("sid")) >= 32
    assert int(root.get("wait")) <= 30 and root.get("hold") == "1"
    assert int(root.get("requests")) == 2
    for a in ("inactivity", "polling", "maxpause", "ver", "authid"):
        assert root.get(a), a
    assert root.get("from") == anon_domain(stack)
    assert root.get("ack") == str(b.rid - 1)
    assert root.get("{%s}version" % NS_XBOSH_) == "1.0"
    assert _mechs(root.find("{%s}features" % NS_STREAM)) == ["ANONYMOUS"]
    # a normal domain offers SCRAM but neither ANONYMOUS nor PLAIN over plain HTTP
    root = Bosh(stack).create(stack.domain)
    assert _mechs(root.find("{%s}features" % NS_STREAM)) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]


NS_XBOSH_ = "urn:xmpp:xbosh"


def test_bosh_has_cors_headers_and_answers_preflight(stack):
    st, hdr, _ = http_request(stack, "OPTIONS", "/http-bind", headers={
        "Origin": "http://page.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert st == 204
    assert hdr["access-control-allow-origin"] == "*"
    assert "POST" in hdr["access-control-allow-methods"]
    assert "content-type" in hdr["access-control-allow-headers"].lower()
    st, hdr, _ = http_request(stack, "POST", "/http-bind",
                              "<body xmlns='%s' rid='5' to='%s'/>" % (NS_BOSH, stack.domain),
                              {"Origin": "http://page.example"})
    assert st == 200 and hdr["access-control-allow-origin"] == "*"


def test_bosh_unknown_host_sid_and_bad_body_get_terminal_conditions(stack):
    b = Bosh(stack)
    root = b.post(to="no-such-host.example", wait="2", hold="1")
    assert (root.get("type"), root.get("condition")) == ("terminate", "host-unknown")
    b.sid = "x" * 32
    root = b.post()
    assert (root.get("type"), root.get("condition")) == ("terminate", "item-not-found")
    root = b.post_raw("<notbody xmlns='%s' rid='1'/>" % NS_BOSH)
    assert root.get("condition") == "bad-request"
    root = b.post_raw("<body xmlns='%s' to='%s'/>" % (NS_BOSH, stack.domain))   # no rid
    assert root.get("condition") == "bad-request"


def test_bosh_rid_out_of_window_ends_the_session_with_item_not_found(stack):
    b = Bosh(stack)
    b.create(anon_domain(stack), wait=1)
    root = b.post(rid=b.rid + 5)
    assert (root.get("type"), root.get("condition")) == ("terminate", "item-not-found")
    root = b.post()                                   # the session is gone now
    assert root.get("condition") == "item-not-found"


def test_bosh_resent_request_gets_the_same_response(stack):
    b = Bosh(stack)
    b.create(anon_domain(stack), wait=1)
    rid = b.rid
    b.post("<auth xmlns='%s' mechanism='ANONYMOUS'/>" % NS_SASL)
    first = b.last
    if "success" not in first:                        # answered empty before the claim came back
        b.take("{%s}success" % NS_SASL)
        rid, first = b.rid - 1, b.last
    again = b.post_raw(b.body("", rid))
    assert b.last == first and "success" in first
    assert again.get("type") is None
    # a rid older than the cached window: the answer is gone, so is the session
    root = b.post_raw(b.body("", rid - 3))
    assert root.get("condition") == "item-not-found"


def test_bosh_inactivity_ends_the_session(stack):
    b = Bosh(stack)
    root = b.create(anon_domain(stack), wait=1)
    inactivity = int(root.get("inactivity"))
    assert inactivity <= 10, "the test profile sets a short inactivity"
    b.post("<auth xmlns='%s' mechanism='ANONYMOUS'/>" % NS_SASL)
    b.take("{%s}success" % NS_SASL)
    time.sleep(inactivity + 1.5)                      # nothing held: the countdown runs
    root = b.post()
    assert (root.get("type"), root.get("condition")) == ("terminate", "item-not-found")


def test_bosh_terminate_ends_the_session_and_the_sid(stack):
    b = Bosh(stack)
    jid = b.login_anonymous(anon_domain(stack))
    assert jid.startswith("") and "@" + anon_domain(stack) + "/" in jid
    root = b.post("<presence xmlns='jabber:client' type='unavailable'/>", type="terminate")
    assert root.get("type") == "terminate" and root.get("condition") is None
    root = b.post()
    assert root.get("condition") == "item-not-found"


def test_bosh_pause_answers_at_once_and_a_long_pause_is_a_policy_violation(stack):
    b = Bosh(stack)
    root = b.create(anon_domain(stack), wait=30)
    maxpause = int(root.get("maxpause"))
    t0 = time.monotonic()
    root = b.post(pause="5")
    assert time.monotonic() - t0 < 3 and root.get("type") is None
    root = b.post(pause=str(maxpause + 1))
    assert (root.get("type"), root.get("condition")) == ("terminate", "policy-violation")


def test_bosh_stream_error_arrives_in_a_remote_stream_error_terminate(stack):
    b = Bosh(stack)
    b.create(anon_domain(stack), wait=1)
    root = b.post("<message xmlns='jabber:client' to='x@%s'><body>early</body></message>"
                  % stack.domain)
    assert (root.get("type"), root.get("condition")) == ("terminate", "remote-stream-error")
    err = root.find("{%s}error" % NS_STREAM)
    assert err is not None and err.find(
        "{urn:ietf:params:xml:ns:xmpp-streams}not-authorized") is not None


def test_bosh_user_and_tcp_user_exchange_messages(stack, new_user):
    jid, pw = new_user("tcp")

    async def go():
        tcp = await login(stack, jid, pw)
        b = Bosh(stack)
        visitor = await asyncio.to_thread(b.login_anonymous, anon_domain(stack))
        try:
            await b.apost("<message xmlns='jabber:client' to='%s' type='chat'><body>hi from web"
                          "</body></message>" % jid)
            got = await next_message(tcp, body="hi from web")
            assert got["from"] == visitor
            held = asyncio.ensure_future(b.atake(MSG, timeout=10))
            await asyncio.sleep(0.3)
            tcp.send_message(mto=visitor, mbody="hi from tcp", mtype="chat")
            msg = await held
            assert msg.get("from") == tcp.boundjid.full
            assert msg.find("{%s}body" % NS_CLIENT).text == "hi from tcp"
        finally:
            await asyncio.to_thread(b.post, "", type="terminate")
            await close(tcp)
    run(go())


def test_bosh_and_websocket_sessions_count_in_sbctl_status(stack):
    def sessions():
        out = stack.sbctl("status").stdout
        for line in out.splitlines():
            if line.startswith("bosh1 "):        # … HEARTBEAT is "0.5s ago", then SESSIONS
                words = line.split()
                return int(words[words.index("ago") + 1])
        return -1

    async def go():
        b = Bosh(stack)
        await asyncio.to_thread(b.login_anonymous, anon_domain(stack))
        ws = WebSocket(stack)
        assert await ws.connect() == 101
        await ws.login_anonymous(anon_domain(stack))
        try:
            # other tests' sessions may still be ending: count at least ours
            wait_until(lambda: sessions() >= 2, 5, "bosh1 counts the 2 sessions")
            peak = sessions()
        finally:
            await asyncio.to_thread(b.post, "", type="terminate")
            await ws.close()
        wait_until(lambda: sessions() <= peak - 2, 5, "both sessions no longer counted")
    run(go())


# ------------------------------------------------------------------ WebSocket
def test_websocket_requires_the_xmpp_subprotocol(stack):
    async def go():
        ws = WebSocket(stack)
        assert await ws.connect(protocol="chat") == 400
        await ws.close()
        ws = WebSocket(stack)
        assert await ws.connect() == 101
        assert ws.headers["sec-websocket-protocol"] == "xmpp"
        await ws.close()
    run(go())


def test_websocket_user_and_tcp_user_exchange_messages_and_close(stack, new_user):
    jid, pw = new_user("tcpws")

    async def go():
        tcp = await login(stack, jid, pw)
        ws = WebSocket(stack, tls=True)
        assert await ws.connect() == 101
        visitor = await ws.login_anonymous(anon_domain(stack))
        try:
            ws.send("<message xmlns='jabber:client' to='%s' type='chat'><body>ws hello</body>"
                    "</message>" % jid)
            got = await next_message(tcp, body="ws hello")
            assert got["from"] == visitor
            tcp.send_message(mto=visitor, mbody="tcp hello", mtype="chat")
            msg = await ws.expect(MSG)
            assert msg.get("from") == tcp.boundjid.full
            ws.send("<close xmlns='%s'/>" % NS_FRAMING)
            await ws.expect("{%s}close" % NS_FRAMING)
            with pytest.raises(WsClosed):
                await ws.element(timeout=5)
        finally:
            await ws.close()
            await close(tcp)
    run(go())


def test_websocket_open_is_answered_with_open_and_framed_features(stack):
    async def go():
        ws = WebSocket(stack)
        await ws.connect()
        ws.open(stack.domain)
        op = await ws.expect("{%s}open" % NS_FRAMING)
        assert op.get("from") == stack.domain and op.get("version") == "1.0" and op.get("id")
        feats = await ws.expect("{%s}features" % NS_STREAM)
        assert _mechs(feats) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
        await ws.close()
    run(go())


def test_websocket_stanza_over_the_limit_is_a_policy_violation(stack):
    async def go():
        ws = WebSocket(stack)
        await ws.connect()
        await ws.login_anonymous(anon_domain(stack))
        big = "x" * 262144
        ws.send("<message xmlns='jabber:client' to='%s'><body>%s</body></message>"
                % (stack.domain, big))
        err = await ws.expect("{%s}error" % NS_STREAM)
        assert err.find("{urn:ietf:params:xml:ns:xmpp-streams}policy-violation") is not None
        await ws.expect("{%s}close" % NS_FRAMING)
        await ws.close()
        # a frame far over the limit is refused by the framing layer (1009)
        ws = WebSocket(stack)
        await ws.connect()
        ws.open(anon_domain(stack))
        await ws.expect("{%s}open" % NS_FRAMING)
        await ws.expect("{%s}features" % NS_STREAM)
        ws.send("<message>%s</message>" % ("y" * 400000))
        with pytest.raises(WsClosed) as e:
            while True:
                await ws.element(timeout=5)
        assert e.value.args and e.value.args[0] == 1009
        await ws.close()
    run(go())


def test_websocket_server_pings_and_drops_a_silent_client(stack):
    async def go():
        ws = WebSocket(stack)
        await ws.connect()
        await ws.login_anonymous(anon_domain(stack))
        op, _ = await ws.frame(timeout=6)              # ws_ping is 2 s in the test profile
        assert op == 0x9
        ws.auto_pong = False                           # now play dead
        t0 = time.monotonic()
        with pytest.raises(WsClosed):
            while True:
                await ws.frame(timeout=10)
        assert time.monotonic() - t0 < 8
        await ws.close()
    run(go())


# ------------------------------------------------------------------ anonymous domain
def test_anonymous_login_over_tcp_and_only_on_the_anonymous_domain(stack):
    async def go():
        s = RawStream(stack, to=anon_domain(stack))
        await s.connect()
        s.open_stream()
        await s.features()
        feats = await s.starttls()
        assert _mechs(feats) == ["ANONYMOUS"]
        s.send("<auth xmlns='%s' mechanism='ANONYMOUS'>=</auth>" % NS_SASL)
        await s.expect("{%s}success" % NS_SASL)
        s.open_stream()
        await s.features()
        jid = await s.bind()
        node = jid.split("@")[0]
        assert len(node) >= 16 and jid.split("/")[0].endswith("@" + anon_domain(stack))
        await s.close()
        # elsewhere ANONYMOUS is neither offered nor accepted
        s = RawStream(stack)
        await s.connect()
        s.open_stream()
        await s.features()
        feats = await s.starttls()
        assert "ANONYMOUS" not in _mechs(feats)
        s.send("<auth xmlns='%s' mechanism='ANONYMOUS'>=</auth>" % NS_SASL)
        fail = await s.expect("{%s}failure" % NS_SASL)
        assert fail.find("{%s}invalid-mechanism" % NS_SASL) is not None
        await s.close()
    run(go())


def test_anonymous_nodes_are_unique_and_released_at_logout(stack):
    import subprocess

    def redis(*args):
        return redis_cli(stack, *args, timeout=5)

    async def go():
        socks = [WebSocket(stack) for _ in range(3)]
        jids = []
        for ws in socks:
            await ws.connect()
            jids.append((await ws.login_anonymous(anon_domain(stack))).split("/")[0])
        assert len(set(jids)) == 3
        for j in jids:
            assert redis("EXISTS", "anon:{%s}" % j) == "1"
        for ws in socks:
            await ws.close()
        for j in jids:
            wait_until(lambda: redis("EXISTS", "anon:{%s}" % j) == "0", 5, "claim released")
    run(go())


def test_anonymous_users_cannot_reach_remote_domains(stack):
    async def go():
        ws = WebSocket(stack)
        await ws.connect()
        await ws.login_anonymous(anon_domain(stack))
        ws.send("<message xmlns='jabber:client' to='someone@elsewhere.example' id='m1'>"
                "<body>out</body></message>")
        err = await ws.expect(MSG)
        assert err.get("type") == "error"
        assert err.find("{%s}error/{urn:ietf:params:xml:ns:xmpp-stanzas}not-allowed"
                        % NS_CLIENT) is not None
        await ws.close()
    run(go())


# ------------------------------------------------------------------ pre-bind
def test_prebind_needs_the_secret(stack):
    st, js = prebind(stack, anon_domain(stack), secret="wrong-secret-wrong-secret")
    assert st == 401 and js["error"] == "unauthorized"
    st, js = prebind(stack, "nobody@" + anon_domain(stack))
    assert st == 400


def test_prebind_anonymous_session_is_usable_with_its_sid_and_rid(stack, new_user):
    jid, pw = new_user("pb")

    async def go():
        tcp = await login(stack, jid, pw)
        st, js = await asyncio.to_thread(prebind, stack, anon_domain(stack))
        assert st == 200, js
        assert set(js) == {"jid", "sid", "rid"} and isinstance(js["rid"], int)
        assert js["jid"].split("/")[0].endswith("@" + anon_domain(stack))
        b = Bosh(stack)
        b.sid, b.rid = js["sid"], js["rid"]
        # the session's wait is the server's (60 s): this request is held
        held = asyncio.ensure_future(b.apost(
            "<message xmlns='jabber:client' to='%s'><body>attached</body></message>" % jid))
        try:
            got = await next_message(tcp, body="attached")
            assert got["from"] == js["jid"]
        finally:
            root = await asyncio.to_thread(b.post, "", type="terminate")
            assert root.get("type") == "terminate"
            assert (await held).get("type") == "terminate"
            await close(tcp)
    run(go())


def test_prebind_for_a_named_user(stack, new_user):
    jid, _pw = new_user("named")
    st, js = prebind(stack, jid)
    assert st == 200, js
    assert js["jid"].startswith(jid + "/")
    st, js = prebind(stack, "nosuchuser@" + stack.domain)
    assert st == 404


# ------------------------------------------------------------------ contacts in place
NS_ROSTER = "jabber:iq:roster"


def _support_password(stack):
    with open(os.path.join(stack.env["SB_VAR"], "demo-passwords")) as f:
        for line in f:
            jid, _, pw = line.strip().partition(" ")
            if jid == "support@" + stack.domain:
                return jid, pw
    pytest.skip("no support account in this stack")


def _psql(stack, sql):
    env = dict(os.environ)
    if stack.env.get("SB_PG_PASSWORD_FILE"):
        with open(stack.env["SB_PG_PASSWORD_FILE"]) as f:
            env["PGPASSWORD"] = f.read().strip()
    return subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", stack.env["SB_PG_PORT"],
                           "-U", "switchboard", "-d", "switchboard", "-tAc", sql],
                          env=env, capture_output=True, text=True, timeout=10).stdout.strip()


def test_visitor_has_support_in_roster_and_support_sees_visitor_come_and_go(stack):
    sjid, spw = _support_password(stack)

    async def go():
        support = await login(stack, sjid, spw)
        pushes, presences = asyncio.Queue(), asyncio.Queue()
        support.add_event_handler("roster_update", lambda iq: pushes.put_nowait(iq))
        support.add_event_handler("presence_available", lambda p: presences.put_nowait(p))
        support.add_event_handler("presence_unavailable", lambda p: presences.put_nowait(p))
        await support.get_roster()
        ws = WebSocket(stack)
        await ws.connect()
        visitor = await ws.login_anonymous(anon_domain(stack))
        vbare = visitor.split("/")[0]
        try:
            ws.send("<iq xmlns='jabber:client' type='get' id='r1'><query xmlns='%s'/></iq>"
                    % NS_ROSTER)
            ws.send("<presence xmlns='jabber:client'/>")
            items = {}
            end = time.monotonic() + 10
            while "r1" not in items:
                el = await ws.element(timeout=max(0.1, end - time.monotonic()))
                if el.tag == "{%s}iq" % NS_CLIENT and el.get("id") == "r1":
                    for it in el.iter("{%s}item" % NS_ROSTER):
                        items[it.get("jid")] = it.get("subscription")
                    items["r1"] = True
            assert items.get(sjid) == "both", items
            # the desk: a roster push with the visitor (both), then its presence
            async def seen(q, pred, what):
                end = time.monotonic() + 10
                while time.monotonic() < end:
                    x = await asyncio.wait_for(q.get(), max(0.1, end - time.monotonic()))
                    if pred(x):
                        return x
                raise AssertionError(what)
            await seen(pushes, lambda iq: any(str(i["jid"]) == vbare and i["subscription"] == "both"
                                               for i in iq["roster"]), "roster push for visitor")
            await seen(presences, lambda p: str(p["from"]) == visitor and p["type"] == "available",
                       "visitor available at the desk")
            assert _psql(stack, "SELECT count(*) FROM roster WHERE domain='%s' AND username='%s'"
                         % (anon_domain(stack), vbare.split("@")[0])) == "1"
            ws.send("<close xmlns='%s'/>" % NS_FRAMING)
            await seen(presences, lambda p: str(p["from"]) == visitor and p["type"] == "unavailable",
                       "visitor unavailable at the desk")
            await seen(pushes, lambda iq: any(str(i["jid"]) == vbare and i["subscription"] == "remove"
                                               for i in iq["roster"]), "roster removal at the desk")
            wait_until(lambda: _psql(stack, "SELECT count(*) FROM roster WHERE domain='%s' AND "
                                     "username='%s'" % (anon_domain(stack), vbare.split("@")[0]))
                       == "0", 5, "the visitor's roster rows are gone")
        finally:
            await ws.close()
            await close(support)
    run(go())


def _restart_sm(stack, name, extra_env=None):
    env = dict(os.environ, SB_STACK_PROFILE=stack.profile, **(extra_env or {}))
    for cmd in ("stop-proc", "start-proc"):
        subprocess.run([stack.stack_sh, cmd, name], cwd=stack.root, env=env, check=True,
                       capture_output=True, timeout=40)
    stack.wait_instances(present=(name,))


async def _roster_of(ws, iq_id, timeout=10):
    """A roster get on a WebSocket stream: {jid: subscription}."""
    ws.send("<iq xmlns='jabber:client' type='get' id='%s'><query xmlns='%s'/></iq>"
            % (iq_id, NS_ROSTER))
    end = time.monotonic() + timeout
    while True:
        el = await ws.element(timeout=max(0.1, end - time.monotonic()))
        if el.tag == "{%s}iq" % NS_CLIENT and el.get("id") == iq_id:
            return {it.get("jid"): it.get("subscription") for it in el.iter("{%s}item" % NS_ROSTER)}


def test_a_full_support_roster_takes_no_new_visitor(stack):
    """contacts_roster_max: the desk's sm, started with a cap of its roster
    size + 1, adds the next visitor (both sides) and refuses the one after —
    that visitor's roster loses the desk again (a push with subscription
    remove) and the desk's roster stays at the cap; one
    `contacts_roster_full` line."""
    sjid, spw = _support_password(stack)
    owner = sm_for(sjid)

    async def desk_items():
        support = await login(stack, sjid, spw)
        try:
            roster = await support.get_roster()
            return [j for j in roster["roster"]]
        finally:
            await close(support)

    before = run(desk_items(), timeout=30)
    cap = len(before) + 1
    log = os.path.join(stack.env["SB_VAR"], "log", owner + ".log")

    async def visitors():
        first, second = WebSocket(stack), WebSocket(stack)
        try:
            await first.connect()
            await first.login_anonymous(anon_domain(stack))
            assert (await _roster_of(first, "r1")).get(sjid) == "both"
            await second.connect()
            await second.login_anonymous(anon_domain(stack))
            items = await _roster_of(second, "r2")
            end = time.monotonic() + 10
            while items.get(sjid) not in (None, "remove"):
                el = await second.element(timeout=max(0.1, end - time.monotonic()))
                for it in el.iter("{%s}item" % NS_ROSTER):
                    if it.get("jid") == sjid:
                        items[sjid] = it.get("subscription")
            after = await desk_items()
            assert len(after) == cap, "desk roster: %d items, cap %d" % (len(after), cap)
        finally:
            await first.close()
            await second.close()

    try:
        _restart_sm(stack, owner, {"SB_SM_CONTACTS_ROSTER_MAX": str(cap)})
        with open(log, errors="replace") as f:
            f.seek(0, 2)
            start = f.tell()
        run(visitors(), timeout=60)
        with open(log, errors="replace") as f:
            f.seek(start)
            lines = [ln for ln in f if "event=contacts_roster_full" in ln]
        assert len(lines) == 1 and sjid in lines[0], lines
    finally:
        _restart_sm(stack, owner)
