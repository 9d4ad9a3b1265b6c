"""Federation (sb-s2s): two Switchboard stacks serving sa.sbtest and sb.sbtest
(stack.sh profiles test2 and test3), found through a local dnsmasq, with
certificates from a private test CA; bounces for unreachable domains;
policy; malformed and spoofed server-to-server input.

The stacks, DNS server and CA live for the whole module (one set-up of a
few seconds); every test makes its own accounts."""

import asyncio
import os
import secrets
import shutil
import socket
import ssl
import time
import xml.etree.ElementTree as ET

import pytest

from xmpptest import (ROOT, close, fnv1a64, iq_error_condition, login, next_message, run,
                      wait_until)
from fedtest import (OFFSET, CertAuthority, Dns, Ejabberd, FedStack, Prosody, RawS2S, host, srv)

NS_STREAM = "http://etherx.jabber.org/streams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_DB = "jabber:server:dialback"

CONNECT_TIMEOUT = 4        # [s2s] connect_timeout of the test stacks
MAX_QUEUE = 5              # [s2s] max_queue of the test stacks

# An address only this checkout uses, for the "A record on 5269" fallback.
FALLBACK_ADDR = "127.77.%d.%d" % (OFFSET // 250 % 250 + 1, OFFSET % 250 + 1)
SILENT_ADDR = "127.0.0.6"
PROSODY_ADDR = "127.0.0.4"
EJABBERD_ADDR = "127.0.0.5"


class Silent:
    """A server that accepts TCP connections and never says a word."""

    def __init__(self, addr, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.listen(16)
        self.accepted = []

    def accept_pending(self):
        self.sock.setblocking(False)
        while True:
            try:
                c, _ = self.sock.accept()
                self.accepted.append(c)
            except OSError:
                return len(self.accepted)

    def close(self):
        for c in self.accepted:
            c.close()
        self.sock.close()


class Fed:
    pass


@pytest.fixture(scope="module")
def fed():
    work = os.path.join(ROOT, "var", "fed")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    f = Fed()
    f.work = work
    f.ca = CertAuthority(work)
    a_cert, a_key = f.ca.issue("sa", ["sa.sbtest", "anon.sa.sbtest", "closed.sa.sbtest"])
    b_cert, b_key = f.ca.issue("sb", ["sb.sbtest"])
    f.b_self = f.ca.issue("sb-self", ["sb.sbtest"], self_signed=True)
    f.b_ca = (b_cert, b_key)
    common = {"SB_S2S_CAFILE": f.ca.ca_cert, "SB_S2S_SYSTEM_TRUST": "0",
              "SB_S2S_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT), "SB_S2S_MAX_QUEUE": str(MAX_QUEUE)}
    f.a = FedStack(2, "sa.sbtest", dict(common, SB_STACK_EXTRA_DOMAINS="closed.sa.sbtest",
                                      SB_S2S_CERT=a_cert, SB_S2S_KEY=a_key))
    f.b = FedStack(3, "sb.sbtest", dict(common, SB_S2S_CERT=b_cert, SB_S2S_KEY=b_key))
    f.silent_port = 25299 + OFFSET
    records = [
        # sa.sbtest prefers direct TLS (XEP-0368), STARTTLS as a second choice.
        srv("xmpps-server", "sa.sbtest", "sa-s2s.sbtest", f.a.s2s_tls_port, prio=0),
        srv("xmpp-server", "sa.sbtest", "sa-s2s.sbtest", f.a.s2s_port, prio=10),
        host("sa-s2s.sbtest", f.a.s2s_addr),
        srv("xmpp-server", "sb.sbtest", "sb-s2s.sbtest", f.b.s2s_port),
        host("sb-s2s.sbtest", f.b.s2s_addr),
        srv("xmpp-server", "silent.sbtest", "silent-host.sbtest", f.silent_port),
        host("silent-host.sbtest", SILENT_ADDR),
        host("afallback.sbtest", FALLBACK_ADDR),
        srv("xmpp-server", "prosody.sbtest", "prosody-s2s.sbtest", 25292 + OFFSET),
        host("prosody-s2s.sbtest", PROSODY_ADDR),
        srv("xmpp-server", "ejabberd.sbtest", "ejabberd-s2s.sbtest", 25287 + OFFSET),
        host("ejabberd-s2s.sbtest", EJABBERD_ADDR),
    ]
    f.hosts = {"sa-s2s.sbtest": f.a.s2s_addr, "sb-s2s.sbtest": f.b.s2s_addr,
               "prosody-s2s.sbtest": PROSODY_ADDR, "ejabberd-s2s.sbtest": EJABBERD_ADDR}
    f.dns = f.silent = None
    try:
        f.dns = Dns(work, records)
        f.silent = Silent(SILENT_ADDR, f.silent_port)
        f.a.start()
        f.a.append_ini("[domain.closed.sa.sbtest]\ns2s_policy = allow: prosody.sbtest\n")
        f.a.restart_s2s()
        f.b.start()
        yield f
    finally:
        for s in (f.a, f.b):
            s.stop()
        if f.silent:
            f.silent.close()
        if f.dns:
            f.dns.stop()


def user(stack, prefix="u", domain=None):
    node = "%s%s" % (prefix, secrets.token_hex(4))
    jid = "%s@%s" % (node, domain or stack.domain)
    pw = secrets.token_urlsafe(10)
    stack.sbctl("user", "add", jid, pw)
    return jid, pw


def add_error_inbox(xmpp):
    xmpp.errors = asyncio.Queue()
    xmpp.add_event_handler("message_error", lambda m: xmpp.errors.put_nowait(m))


async def next_error(xmpp, timeout):
    try:
        return await asyncio.wait_for(xmpp.errors.get(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError("no error message within %ss" % timeout)


def s2s_row(stack, remote, direction):
    for r in stack.s2s_status():
        if r["remote"] == remote and r["dir"] == direction and r["state"] in ("ready", "open"):
            return r
    return None


# ------------------------------------------------------------------ stack ↔ stack
def test_messages_flow_both_ways_between_two_switchboard_stacks(fed):
    a_jid, a_pw = user(fed.a, "alice")
    b_jid, b_pw = user(fed.b, "bob")

    async def go():
        alice = await login(fed.a, a_jid, a_pw)
        bob = await login(fed.b, b_jid, b_pw)
        try:
            for i in range(3):
                text = "a→b %d %s" % (i, secrets.token_hex(3))
                alice.send_message(mto=b_jid, mbody=text, mtype="chat")
                msg = await next_message(bob, body=text, timeout=15)
                assert msg["from"] == alice.boundjid.full
                text = "b→a %d %s" % (i, secrets.token_hex(3))
                bob.send_message(mto=alice.boundjid.full, mbody=text, mtype="chat")
                msg = await next_message(alice, body=text, timeout=15)
                assert msg["from"] == bob.boundjid.full
        finally:
            await close(alice)
            await close(bob)
    run(go())


def test_sasl_external_is_used_when_both_certificates_validate(fed):
    wait_until(lambda: s2s_row(fed.a, "sb.sbtest", "out") is not None, 10, "sa→sb route")
    row = s2s_row(fed.a, "sb.sbtest", "out")
    assert row["auth"] == "external" and row["tls"] == "yes"
    row = s2s_row(fed.b, "sa.sbtest", "out")
    assert row and row["auth"] == "external" and row["tls"] == "yes"
    row = s2s_row(fed.b, "sa.sbtest", "in")
    assert row and row["auth"] == "external"


def test_iq_to_unknown_remote_user_gets_an_error(fed):
    a_jid, a_pw = user(fed.a, "alice")

    async def go():
        alice = await login(fed.a, a_jid, a_pw)
        try:
            cond = await iq_error_condition(alice, "nobody%s@sb.sbtest/r" % secrets.token_hex(3),
                                            timeout=15)
            assert cond == "service-unavailable"
        finally:
            await close(alice)
    run(go())


def test_presence_subscription_across_servers_end_to_end(fed):
    a_jid, a_pw = user(fed.a, "alice")
    b_jid, b_pw = user(fed.b, "bob")

    async def go():
        alice = await login(fed.a, a_jid, a_pw)
        bob = await login(fed.b, b_jid, b_pw)
        got = {k: asyncio.Queue() for k in ("subscribe", "subscribed", "available")}
        bob.add_event_handler("presence_subscribe", lambda p: got["subscribe"].put_nowait(p))
        alice.add_event_handler("presence_subscribed", lambda p: got["subscribed"].put_nowait(p))
        alice.add_event_handler("presence_available", lambda p: got["available"].put_nowait(p))
        try:
            alice.send_presence(pto=b_jid, ptype="subscribe")
            p = await asyncio.wait_for(got["subscribe"].get(), 15)
            assert p["from"].bare == a_jid
            bob.send_presence(pto=a_jid, ptype="subscribed")
            p = await asyncio.wait_for(got["subscribed"].get(), 15)
            assert p["from"].bare == b_jid
            # Now subscribed to bob: his presence reaches alice across servers
            # (the probe answered by sb.sbtest, or his next broadcast).
            bob.send_presence(pstatus="here")
            deadline = time.monotonic() + 15
            while True:
                p = await asyncio.wait_for(got["available"].get(), deadline - time.monotonic())
                if p["from"].bare == b_jid:
                    break
            roster = await alice.get_roster()
            assert roster["roster"]["items"][b_jid]["subscription"] in ("to", "both")
        finally:
            await close(alice)
            await close(bob)
    run(go())


def test_dialback_is_used_when_one_certificate_is_self_signed(fed):
    cert, key = fed.b_self
    fed.b.restart_s2s(SB_S2S_CERT=cert, SB_S2S_KEY=key)
    try:
        a_jid, a_pw = user(fed.a, "alice")
        b_jid, b_pw = user(fed.b, "bob")

        async def go():
            alice = await login(fed.a, a_jid, a_pw)
            bob = await login(fed.b, b_jid, b_pw)
            try:
                text = "over dialback %s" % secrets.token_hex(3)
                alice.send_message(mto=b_jid, mbody=text, mtype="chat")
                await next_message(bob, body=text, timeout=15)
                bob.send_message(mto=a_jid, mbody=text + " back", mtype="chat")
                await next_message(alice, body=text + " back", timeout=15)
            finally:
                await close(alice)
                await close(bob)
        run(go())
        # sa.sbtest cannot validate sb.sbtest's certificate and sb.sbtest's client
        # certificate does not validate at sa.sbtest: dialback both ways.
        assert s2s_row(fed.a, "sb.sbtest", "out")["auth"] == "dialback"
        assert s2s_row(fed.b, "sa.sbtest", "out")["auth"] == "dialback"
        assert s2s_row(fed.a, "sb.sbtest", "in")["auth"] == "dialback"
    finally:
        fed.b.restart_s2s(SB_S2S_CERT=fed.b_ca[0], SB_S2S_KEY=fed.b_ca[1])


# ------------------------------------------------------------------ bounces
async def _send_and_get_error(stack, to, timeout, jid=None, pw=None):
    if jid is None:
        jid, pw = user(stack, "sender")
    xmpp = await login(stack, jid, pw)
    add_error_inbox(xmpp)
    try:
        t0 = time.monotonic()
        xmpp.send_message(mto=to, mbody="anyone there?", mtype="chat")
        err = await next_error(xmpp, timeout)
        return err, time.monotonic() - t0
    finally:
        await close(xmpp)


def test_domain_without_srv_or_a_record_gives_remote_server_not_found(fed):
    err, took = run(_send_and_get_error(fed.a, "someone@nowhere.sbtest", 10))
    assert err["error"]["condition"] == "remote-server-not-found"
    assert err["from"] == "someone@nowhere.sbtest"


def test_server_that_never_answers_gives_remote_server_timeout(fed):
    err, took = run(_send_and_get_error(fed.a, "someone@silent.sbtest", CONNECT_TIMEOUT + 6))
    assert err["error"]["condition"] == "remote-server-timeout"
    assert CONNECT_TIMEOUT - 0.5 <= took <= CONNECT_TIMEOUT + 3, took
    assert fed.silent.accept_pending() >= 1      # it did reach the silent server


def test_domain_with_only_an_a_record_is_tried_on_5269(fed):
    lis = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lis.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        lis.bind((FALLBACK_ADDR, 5269))
    except OSError as e:
        lis.close()
        pytest.skip("cannot listen on %s:5269 here (%s)" % (FALLBACK_ADDR, e))
    lis.listen(4)
    lis.settimeout(10)
    try:
        async def go():
            task = asyncio.ensure_future(_send_and_get_error(fed.a, "x@afallback.sbtest", 15))
            conn, _ = await asyncio.get_running_loop().run_in_executor(None, lis.accept)
            conn.close()                 # not an XMPP server after all
            return await task
        err, _ = run(go())
        assert err["error"]["condition"] == "remote-server-not-found"
    finally:
        lis.close()


def test_queue_for_a_domain_is_bounded_and_every_stanza_is_answered(fed):
    jid, pw = user(fed.a, "sender")

    async def go():
        xmpp = await login(fed.a, jid, pw)
        add_error_inbox(xmpp)
        try:
            for i in range(MAX_QUEUE + 2):
                xmpp.send_message(mto="someone@silent.sbtest", mbody="m%d" % i, mtype="chat")
            conds = []
            for _ in range(MAX_QUEUE + 2):
                err = await next_error(xmpp, CONNECT_TIMEOUT + 6)
                conds.append(err["error"]["condition"])
            # Over the bound at once; the queued ones when the attempt times out.
            assert conds[:2] == ["resource-constraint"] * 2, conds
            assert conds[2:] == ["remote-server-timeout"] * MAX_QUEUE, conds
        finally:
            await close(xmpp)
    run(go())


def test_idle_outgoing_stream_is_closed(fed):
    fed.a.restart_s2s(SB_S2S_IDLE_TIMEOUT="2")
    try:
        _still_federating_a_to_b(fed)
        assert s2s_row(fed.a, "sb.sbtest", "out") is not None
        wait_until(lambda: s2s_row(fed.a, "sb.sbtest", "out") is None, 8,
                   "the idle route to sb.sbtest closed")
        assert "why=idle" in fed.a.log_text()
        _still_federating_a_to_b(fed)             # and it comes back on demand
    finally:
        fed.a.extra_env.pop("SB_S2S_IDLE_TIMEOUT", None)
        fed.a.restart_s2s()


def test_quiet_outgoing_stream_is_pinged_and_the_answer_comes_back(fed):
    # The answer to our XEP-0199 ping arrives on sb.sbtest's own stream to us.
    fed.a.restart_s2s(SB_S2S_PING_INTERVAL="1")
    try:
        _still_federating_a_to_b(fed)
        wait_until(lambda: "event=pong remote=sb.sbtest" in fed.a.log_text(), 8,
                   "a pong from sb.sbtest")
        assert s2s_row(fed.a, "sb.sbtest", "out") is not None   # still up
    finally:
        fed.a.extra_env.pop("SB_S2S_PING_INTERVAL", None)
        fed.a.restart_s2s()


def test_remote_domain_moves_to_a_live_instance_when_its_owner_dies(fed):
    # A second s2s instance in sa.sbtest's cluster; the router hashes each
    # remote domain to one of them (rendezvous, like users to sms).
    fed.a.sh("start-proc", "s2s2", SB_S2S_PORT=str(fed.a.s2s_port + 10),
             SB_S2S_TLS_PORT=str(fed.a.s2s_tls_port + 10))
    try:
        fed.a.wait_instances(present=("s2s1", "s2s2"), timeout=10)
        owner = max(("s2s1", "s2s2"), key=lambda i: fnv1a64((i + "\n" + "sb.sbtest").encode()))
        other = "s2s1" if owner == "s2s2" else "s2s2"
        _still_federating_a_to_b(fed)
        assert s2s_row(fed.a, "sb.sbtest", "out")["instance"] == owner
        fed.a.sh("kill-proc", owner)
        fed.a.wait_instances(present=(other,), absent=(owner,), timeout=10)
        _still_federating_a_to_b(fed)
        assert s2s_row(fed.a, "sb.sbtest", "out")["instance"] == other
    finally:
        fed.a.sh("stop-proc", "s2s2")
        if "s2s1" not in fed.a.live_instances():
            fed.a.restart_s2s()


def _still_federating_a_to_b(fed):
    a_jid, a_pw = user(fed.a, "alice")
    b_jid, b_pw = user(fed.b, "bob")

    async def go():
        alice = await login(fed.a, a_jid, a_pw)
        bob = await login(fed.b, b_jid, b_pw)
        try:
            text = "a to b %s" % secrets.token_hex(3)
            alice.send_message(mto=b_jid, mbody=text, mtype="chat")
            await next_message(bob, body=text, timeout=15)
        finally:
            await close(alice)
            await close(bob)
    run(go())


# ------------------------------------------------------------------ policy
def test_anonymous_domain_may_not_reach_remote_domains_but_staff_may(fed):
    staff_jid, staff_pw = user(fed.a, "staff")
    b_jid, b_pw = user(fed.b, "bob")

    async def go():
        bob = await login(fed.b, b_jid, b_pw)
        visitor = await login(fed.a, "anon.sa.sbtest", "", mech="ANONYMOUS")
        add_error_inbox(visitor)
        try:
            visitor.send_message(mto=b_jid, mbody="from a visitor", mtype="chat")
            err = await next_error(visitor, 10)
            assert err["error"]["condition"] == "not-allowed"
            staff = await login(fed.a, staff_jid, staff_pw)
            try:
                staff.send_message(mto=b_jid, mbody="from staff", mtype="chat")
                await next_message(bob, body="from staff", timeout=15)
            finally:
                await close(staff)
            with pytest.raises(AssertionError):
                await next_message(bob, body="from a visitor", timeout=1)
        finally:
            await close(visitor)
            await close(bob)
    run(go())


def test_domain_policy_refuses_remote_domains_in_both_directions(fed):
    # [domain.closed.sa.sbtest] s2s_policy = allow: prosody.sbtest (fixture)
    c_jid, c_pw = user(fed.a, "clerk", domain="closed.sa.sbtest")
    b_jid, b_pw = user(fed.b, "bob")

    async def go():
        clerk = await login(fed.a, c_jid, c_pw)
        bob = await login(fed.b, b_jid, b_pw)
        add_error_inbox(clerk)
        add_error_inbox(bob)
        try:
            clerk.send_message(mto=b_jid, mbody="out", mtype="chat")
            err = await next_error(clerk, 10)
            assert err["error"]["condition"] == "not-allowed"
            bob.send_message(mto=c_jid, mbody="in", mtype="chat")
            err = await next_error(bob, CONNECT_TIMEOUT + 6)
            assert err["error"]["condition"] in ("remote-server-not-found", "not-allowed")
            with pytest.raises(AssertionError):
                await next_message(clerk, body="in", timeout=1)
        finally:
            await close(clerk)
            await close(bob)
    run(go())


# ------------------------------------------------------------------ hostile input
def _still_federating(fed):
    a_jid, a_pw = user(fed.a, "alice")
    b_jid, b_pw = user(fed.b, "bob")

    async def go():
        alice = await login(fed.a, a_jid, a_pw)
        bob = await login(fed.b, b_jid, b_pw)
        try:
            text = "still here %s" % secrets.token_hex(3)
            bob.send_message(mto=a_jid, mbody=text, mtype="chat")
            await next_message(alice, body=text, timeout=15)
        finally:
            await close(alice)
            await close(bob)
    run(go())


def test_garbage_before_the_stream_header_is_not_well_formed(fed):
    async def go():
        s = await RawS2S(fed.a).connect()
        try:
            s.open_stream("sb.sbtest", send=False)
            s.send("GARBAGE\x01<stream:stream xmlns='jabber:server' "
                   "xmlns:stream='http://etherx.jabber.org/streams' to='sa.sbtest' version='1.0'>")
            assert await s.stream_error() == "not-well-formed"
        finally:
            await s.close()
    run(go())
    _still_federating(fed)


def test_stream_to_a_domain_not_served_is_host_unknown(fed):
    async def go():
        s = await RawS2S(fed.a).connect()
        try:
            s.open_stream("sb.sbtest", to="elsewhere.sbtest")
            assert await s.stream_error() == "host-unknown"
        finally:
            await s.close()
    run(go())


def test_streams_of_a_removed_domain_end_with_host_unknown(fed):
    """`sbctl domain del` ends the server-to-server streams of that domain
    at once (both directions use the local domain of the stream)."""
    name = "gone%s.sa.sbtest" % secrets.token_hex(3)
    fed.a.sbctl("domain", "add", name)

    async def go():
        s = await RawS2S(fed.a).connect()
        try:
            # the s2s serves the new domain within a second (sb:domains)
            deadline = time.monotonic() + 10
            while True:
                s.open_stream("sb.sbtest", to=name)
                el = await s.element()
                if el is not None and el.tag == "{%s}features" % NS_STREAM:
                    break
                assert time.monotonic() < deadline, "s2s never served %s" % name
                await s.close()
                await asyncio.sleep(0.2)
                s = await RawS2S(fed.a).connect()
            await asyncio.to_thread(fed.a.sbctl, "domain", "del", name)
            assert await s.stream_error(10) == "host-unknown"
        finally:
            await s.close()
    run(go())
    _still_federating(fed)


def test_bad_dialback_key_is_refused_and_the_stream_closed(fed):
    async def go():
        s = await RawS2S(fed.a).connect()
        try:
            s.open_stream("sb.sbtest")
            await s.element()                       # features
            await s.starttls("sb.sbtest")
            s.send("<db:result from='sb.sbtest' to='sa.sbtest'>%s</db:result>" % ("0" * 64))
            el = await s.element(15)
            assert el.tag == "{%s}result" % NS_DB and el.get("type") == "invalid", el
            assert await s.stream_error() == "not-authorized"
        finally:
            await s.close()
    run(go())
    _still_federating(fed)


def test_stanza_from_a_domain_the_peer_did_not_authenticate_is_invalid_from(fed):
    # A certificate for sb.sbtest from the test CA: the raw peer authenticates
    # as sb.sbtest with SASL EXTERNAL, then claims to speak for another domain.
    cert, key = fed.b_ca
    a_jid, a_pw = user(fed.a, "alice")

    async def go():
        alice = await login(fed.a, a_jid, a_pw)
        s = await RawS2S(fed.a).connect()
        try:
            s.open_stream("sb.sbtest")
            await s.element()
            feats = await s.starttls("sb.sbtest", cert, key)
            assert "EXTERNAL" in ET.tostring(feats).decode()
            s.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
            el = await s.element()
            assert el.tag.endswith("success"), el
            s.open_stream("sb.sbtest")
            await s.element()                       # features of the new stream
            s.send("<message from='eve@sb.sbtest/x' to='%s' type='chat'><body>legit</body>"
                   "</message>" % a_jid)
            await next_message(alice, body="legit", timeout=10)
            s.send("<message from='ceo@elsewhere.sbtest' to='%s' type='chat'><body>spoof</body>"
                   "</message>" % a_jid)
            assert await s.stream_error() == "invalid-from"
            with pytest.raises(AssertionError):
                await next_message(alice, body="spoof", timeout=1)
        finally:
            await s.close()
            await close(alice)
    run(go())
    _still_federating(fed)


# ------------------------------------------------------------------ Prosody
@pytest.fixture(scope="module")
def prosody(fed):
    if not shutil.which("prosody"):
        pytest.fail("prosody is not installed (deploy/dev/packages.txt)")
    cert, key = fed.ca.issue("prosody", ["prosody.sbtest"])
    p = Prosody(fed.work, "prosody.sbtest", PROSODY_ADDR, 25291 + OFFSET, 25292 + OFFSET, cert, key,
                fed.ca.ca_cert)
    try:
        p.start()
        yield p
    finally:
        p.stop()


def _exchange(local_stack, local_user, remote, remote_user):
    (l_jid, l_pw), (r_jid, r_pw) = local_user, remote_user

    async def go():
        ours = await login(local_stack, l_jid, l_pw)
        theirs = await login(remote, r_jid, r_pw)
        try:
            for i in range(2):
                text = "to them %d %s" % (i, secrets.token_hex(3))
                ours.send_message(mto=r_jid, mbody=text, mtype="chat")
                msg = await next_message(theirs, body=text, timeout=20)
                assert msg["from"] == ours.boundjid.full
                text = "to us %d %s" % (i, secrets.token_hex(3))
                theirs.send_message(mto=l_jid, mbody=text, mtype="chat")
                msg = await next_message(ours, body=text, timeout=20)
                assert msg["from"] == theirs.boundjid.full
        finally:
            await close(ours)
            await close(theirs)
    run(go(), timeout=90)


def test_federates_with_prosody_both_ways(fed, prosody):
    _exchange(fed.a, user(fed.a, "alice"), prosody, prosody.add_user("pat"))
    # Prosody has no trust anchor for our CA, so it cannot accept SASL
    # EXTERNAL from us: we prove sa.sbtest by dialback (Prosody verifies the
    # key with us). Its own certificate is from the CA we trust, so it
    # authenticates to us with SASL EXTERNAL.
    row = s2s_row(fed.a, "prosody.sbtest", "out")
    assert row and row["tls"] == "yes" and row["auth"] == "dialback", row
    row = s2s_row(fed.a, "prosody.sbtest", "in")
    assert row and row["tls"] == "yes" and row["auth"] == "external", row


# ------------------------------------------------------------------ ejabberd
@pytest.fixture(scope="module")
def ejabberd(fed):
    if not shutil.which("ejabberdctl"):
        pytest.fail("ejabberd is not installed (deploy/dev/packages.txt)")
    cert, key = fed.ca.issue("ejabberd", ["ejabberd.sbtest"])
    e = Ejabberd(fed.work, "ejabberd.sbtest", EJABBERD_ADDR, 25286 + OFFSET, 25287 + OFFSET,
                 25288 + OFFSET, fed.ca.bundle("ejabberd", cert, key), fed.ca.ca_cert, fed.hosts)
    try:
        e.start()
        yield e
    finally:
        e.stop()


def test_federates_with_ejabberd_both_ways_over_sasl_external(fed, ejabberd):
    _exchange(fed.a, user(fed.a, "alice"), ejabberd, ejabberd.add_user("ed"))
    # Both sides trust the test CA: SASL EXTERNAL (XEP-0178) both ways.
    row = s2s_row(fed.a, "ejabberd.sbtest", "out")
    assert row and row["tls"] == "yes" and row["auth"] == "external", row
    row = s2s_row(fed.a, "ejabberd.sbtest", "in")
    assert row and row["tls"] == "yes" and row["auth"] == "external", row
