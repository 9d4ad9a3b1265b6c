"""Limits per source address and per account (c2s/limits.c).

Each test speaks from a loopback address of its own (127.0.0.2x, bound
before connect), so what it uses up is invisible to every other test that
connects from 127.0.0.1, and another loopback address shows that only the
one over the limit is refused:

- the stack's c2s1 with its defaults: the 101st unauthenticated
  connection from one address gets policy-violation, refusals are logged
  once per period;
- c2s4 (the built-in login_failures_per_addr, 30 a minute): 30 failed
  logins from one address and the next <auth/> gets temporary-auth-failure
  (the right password too), a SASL2 <authenticate/> too;
- c2s1: 10 failed SASL2 logins of one account lock it for SASL2 and
  legacy SASL alike;
- c2s1 and c2s2 together (defaults): 10 failed logins of one account,
  spread over both front-ends, lock it on both (counted in Redis), the
  right password too; other accounts log in;
- c2s6 (max_conns_per_addr = 3): authenticated sessions count, on the
  STARTTLS and the direct TLS port;
- bosh2 (max_conns_per_addr = 2): BOSH sessions and WebSocket streams;
  XEP-0206 pre-bound sessions (the application server's address) are not
  counted;
- s2s1 (defaults): incoming streams per address and per remote domain;
- c2s5 (96 descriptors): accept pauses once and resumes (common/listen.c).

Every other test logs in from 127.0.0.1 and dozens fail on purpose (wrong
passwords, bad tokens), more than 30 in some minutes: the test profile
raises [c2s]/[bosh] login_failures_per_addr to 300 (deploy/dev/stack.sh
test_sets), which is why the default is checked on c2s4."""

import asyncio
import base64
import http.client
import json
import os
import re
import secrets
import ssl
import time
import types
import xml.etree.ElementTree as ET

import pytest

from test_limits import ExtraC2S, free_port
from xmpptest import (NS_SASL, RawStream, Log, describe, redis_cli,
                      run, stream_error_condition, wait_until)

SESSIONS_CAP = 3          # c2s6
WEB_CAP = 2               # bosh2
UNAUTH_DEFAULT = 100      # [c2s] max_unauth_per_addr
ADDR_FAILURES_DEFAULT = 30
ACCOUNT_FAILURES_DEFAULT = 10


class From(RawStream):
    """A RawStream whose TCP connection leaves from a given local address."""

    def __init__(self, stack, source, **kw):
        super().__init__(stack, source=source, **kw)


def sasl_condition(el):
    """'success', or the condition inside a SASL <failure/>."""
    if el is not None and el.tag == "{%s}success" % NS_SASL:
        return "success"
    if el is None or el.tag != "{%s}failure" % NS_SASL:
        raise AssertionError("expected a SASL answer, got %s" % describe(el))
    return next(iter(el)).tag.split("}", 1)[1]


async def try_plain(stack, source, jid, password, instance="c2s1", tries=1):
    """Connect from `source`, STARTTLS, then PLAIN `tries` times on one
    stream; the list of answers ('success' or the failure condition)."""
    s = From(stack, source, instance=instance)
    out = []
    try:
        await s.connect()
        s.open_stream()
        await s.features()
        await s.starttls()
        for _ in range(tries):
            out.append(sasl_condition(await s.auth_plain(jid, password)))
            if out[-1] == "success":
                break
        return out
    finally:
        s.abort()


async def try_sasl2(stack, source, jid, password, instance="c2s1"):
    """One XEP-0388 SCRAM-SHA-256 login from `source` on the direct TLS
    port: 'success' or the condition of its <failure/>."""
    from test_sasl2 import Sasl2Client, Tcp, condition, s2
    t = Tcp(stack, instance=instance)
    t.raw = From(stack, source, instance=instance, direct_tls=True)
    c = Sasl2Client(stack, jid, password, transport=t)
    try:
        await c.start()
        el = await c.scram()
        return "success" if el is not None and el.tag == s2("success") else condition(el)
    finally:
        t.raw.abort()


async def refused(s):
    """The stream of s ends with a policy-violation stream error."""
    if s.parser is None:            # nothing sent: the server speaks first
        s.parser = ET.XMLPullParser(("start", "end"))
    el = await s.element()
    while el is not None and stream_error_condition(el) is None:
        el = await s.element()
    assert stream_error_condition(el) == "policy-violation", describe(el)
    await s.wait_closed(5)
    assert s.closed


# ---------------------------------------------------------------- defaults on c2s1

def test_unauthenticated_cap_refuses_the_101st_from_one_address(stack):
    log = Log(stack, "c2s1")

    async def go():
        held = []
        try:
            for _ in range(UNAUTH_DEFAULT):
                s = From(stack, "127.0.0.21")
                await s.connect()
                s.open_stream()
                await s.features()          # counted: accepted, not authenticated
                held.append(s)
            over = From(stack, "127.0.0.21")
            await over.connect()
            await refused(over)             # said at once, header first, then the error
            other = From(stack, "127.0.0.22")
            await other.connect()
            other.open_stream()
            await other.features()          # another address is not affected
            other.abort()
            for _ in range(4):              # more refusals, within the log period
                again = From(stack, "127.0.0.21")
                await again.connect()
                await refused(again)
            held.pop().abort()              # one leaves: one more may come
            async def admitted():
                s = From(stack, "127.0.0.21")
                await s.connect()
                s.open_stream()
                el = await s.element()
                s.abort()
                return el is not None and el.tag.endswith("}features")
            deadline = time.monotonic() + 10
            while not await admitted():
                assert time.monotonic() < deadline, "a slot freed, still refused"
                await asyncio.sleep(0.1)
        finally:
            for s in held:
                s.abort()
    run(go(), timeout=90)
    lines = log.lines("event=addr_limited addr=127.0.0.21 ")
    assert len(lines) == 1, lines                  # one line per address per period
    assert "limit=unauthenticated" in lines[0] and "max=100" in lines[0], lines[0]
    assert not [l for l in log.lines("event=stream_error") if "127.0.0.21:" in l]


@pytest.fixture(scope="module")
def default_c2s(stack, tmp_path_factory):
    """c2s4 on a copy of the INI without the test profile's raised
    login_failures_per_addr (deploy/dev/stack.sh test_sets): the built-in
    default, 30 a minute."""
    name = "c2s4"
    port, tls_port = free_port(), free_port()
    ini = str(tmp_path_factory.mktemp("c2s4") / "switchboard.ini")
    with open(stack.ini) as f:
        lines = [l for l in f if not re.match(r"\s*login_failures_per_addr\s*=", l)]
    with open(ini, "w") as f:
        f.writelines(lines)
        f.write("\n[c2s.%s]\nport = %d\ntls_port = %d\n" % (name, port, tls_port))
    c = ExtraC2S(stack, name, ini=ini, ports=(port, tls_port))
    try:
        c.wait_ready()
        yield c
    finally:
        assert c.stop() == 0, "c2s4 did not exit cleanly on SIGTERM"


def test_failed_logins_per_address_then_temporary_auth_failure(stack, new_user, default_c2s):
    jid, password = new_user("addr")

    async def go():
        failures = 0
        while failures < ADDR_FAILURES_DEFAULT:   # many accounts, none over its own limit
            n = min(3, ADDR_FAILURES_DEFAULT - failures)
            who = "nobody%s@%s" % (secrets.token_hex(4), stack.domain)
            got = await try_plain(stack, "127.0.0.26", who, "wrong", instance="c2s4", tries=n)
            assert got == ["not-authorized"] * n, got
            failures += n
        # The bucket is empty: the right password of a good account too.
        assert await try_plain(stack, "127.0.0.26", jid, password, instance="c2s4") == \
            ["temporary-auth-failure"]
        # SASL2 reads the same bucket: refused before any SCRAM work.
        assert await try_sasl2(stack, "127.0.0.26", jid, password, instance="c2s4") == \
            "temporary-auth-failure"
        assert await try_plain(stack, "127.0.0.27", jid, password, instance="c2s4") == \
            ["success"]
    run(go(), timeout=120)
    assert "event=addr_limited addr=127.0.0.26 limit=login-failures max=30 " in \
        default_c2s.log_text()


def test_sasl2_failures_lock_the_account_for_sasl2_and_legacy_sasl(stack, new_user):
    jid, password = new_user("s2acct")

    async def go():
        for i in range(ACCOUNT_FAILURES_DEFAULT):      # wrong passwords through SASL2
            got = await try_sasl2(stack, "127.0.0.28", jid, "wrong")
            assert got == "not-authorized", (i, got)
        deadline = time.monotonic() + 10               # the lock follows Redis's answer
        while await try_sasl2(stack, "127.0.0.29", jid, password) != "temporary-auth-failure":
            assert time.monotonic() < deadline, "SASL2 failures never locked %s" % jid
            await asyncio.sleep(0.2)
        assert await try_plain(stack, "127.0.0.29", jid, password) == ["temporary-auth-failure"]
    run(go(), timeout=120)


def test_failed_logins_per_account_lock_it_on_every_front_end(stack, new_user):
    jid, password = new_user("acct")
    other, other_pw = new_user("acct")
    c2s1, c2s2 = Log(stack, "c2s1"), Log(stack, "c2s2")

    async def go():
        # 10 failures, spread over both front-ends (and two addresses).
        for inst, src in (("c2s1", "127.0.0.23"), ("c2s2", "127.0.0.24")) * 2:
            got = await try_plain(stack, src, jid, "wrong", instance=inst, tries=2)
            assert got == ["not-authorized"] * 2, got
        assert await try_plain(stack, "127.0.0.23", jid, "wrong", instance="c2s1",
                               tries=2) == ["not-authorized"] * 2
        # Locked on both, once the lock was heard (Redis pub/sub), whatever
        # the password.
        for inst, src in (("c2s1", "127.0.0.25"), ("c2s2", "127.0.0.25")):
            deadline = time.monotonic() + 10
            while (await try_plain(stack, src, jid, "wrong", instance=inst))[0] != \
                    "temporary-auth-failure":
                assert time.monotonic() < deadline, "%s never locked %s" % (inst, jid)
                await asyncio.sleep(0.2)
            assert await try_plain(stack, src, jid, password, instance=inst) == \
                ["temporary-auth-failure"]
            # Another account from the same address is not affected.
            assert await try_plain(stack, src, other, other_pw, instance=inst) == ["success"]
    run(go(), timeout=120)
    locked = c2s1.lines("event=account_locked") + c2s2.lines("event=account_locked")
    assert any("account=%s " % jid in l and "failures=10" in l for l in locked), locked
    key = "sb:authfail:{%s}" % jid
    ttl = int(redis_cli(stack, "TTL", key).strip())
    assert 60 < ttl <= 120, ttl              # lockout (the window) + the window


# ---------------------------------------------------------------- c2s6: sessions

@pytest.fixture(scope="module")
def cap_c2s(stack):
    c = ExtraC2S(stack, "c2s6", env={"SB_C2S_MAX_CONNS_PER_ADDR": str(SESSIONS_CAP)})
    try:
        c.wait_ready()
        yield c
    finally:
        assert c.stop() == 0, "c2s6 did not exit cleanly on SIGTERM"


def test_sessions_per_address_count_authenticated_ones_too(stack, cap_c2s):
    users = [stack.add_user("cap") for _ in range(SESSIONS_CAP + 1)]

    async def go():
        held = []
        try:
            for jid, pw in users[:SESSIONS_CAP]:
                s = From(stack, "127.0.0.31", instance="c2s6")
                await s.login(jid, pw)
                held.append(s)
            over = From(stack, "127.0.0.31", instance="c2s6")
            await over.connect()
            await refused(over)
            tls = From(stack, "127.0.0.31", instance="c2s6", direct_tls=True)
            await tls.connect()             # handshake, then the error at its header
            tls.open_stream()
            await refused(tls)
            ok = From(stack, "127.0.0.32", instance="c2s6")
            assert await ok.login(*users[SESSIONS_CAP])
            ok.abort()
        finally:
            for s in held:
                s.abort()
    run(go(), timeout=90)
    assert "limit=sessions max=3" in cap_c2s.log_text()


# ---------------------------------------------------------------- bosh2: BOSH and WebSocket

@pytest.fixture(scope="module")
def cap_bosh(stack):
    c = ExtraC2S(stack, "bosh2", kind="bosh", env={"SB_BOSH_MAX_CONNS_PER_ADDR": str(WEB_CAP)})
    stack.c2s.pop("bosh2", None)
    try:
        c.wait_ready()
        yield c
    finally:
        assert c.stop() == 0, "bosh2 did not exit cleanly on SIGTERM"


def bosh_create(port, source, domain):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20,
                                      source_address=(source, 0))
    body = ("<body xmlns='http://jabber.org/protocol/httpbind' rid='%d' to='%s' wait='2' "
            "hold='1' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>"
            % (secrets.randbelow(10**9) + 10**6, domain))
    try:
        conn.request("POST", "/http-bind", body, {"Content-Type": "text/xml; charset=utf-8"})
        r = conn.getresponse()
        assert r.status == 200, r.status
        return ET.fromstring(r.read().decode())
    finally:
        conn.close()


async def ws_open(port, source, domain):
    """A WebSocket from `source`, upgraded, <open/> sent: the first element back."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 10)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(("GET /xmpp-websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Protocol: xmpp\r\n\r\n" % key).encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    from webtest import WebSocket
    ws = WebSocket(types.SimpleNamespace(env={}))
    ws.reader, ws.writer = reader, writer
    ws.open(domain)
    return ws


async def ws_stream_error(ws):
    from webtest import WsClosed
    try:
        while True:
            el = await ws.element(timeout=10)
            if stream_error_condition(el):
                return stream_error_condition(el)
    except WsClosed:
        return None


def test_bosh_sessions_and_websockets_per_address(stack, cap_bosh):
    from webtest import anon_domain
    dom = anon_domain(stack)
    port = cap_bosh.port

    async def go():
        held = [bosh_create(port, "127.0.0.33", dom) for _ in range(WEB_CAP)]
        assert all(b.get("sid") and b.get("type") != "terminate" for b in held), held
        over = await asyncio.to_thread(bosh_create, port, "127.0.0.33", dom)
        assert over.get("type") == "terminate", ET.tostring(over)
        assert over.get("condition") == "remote-stream-error", ET.tostring(over)
        err = over.find("{http://etherx.jabber.org/streams}error")
        assert stream_error_condition(err) == "policy-violation", ET.tostring(over)
        ws = await ws_open(port, "127.0.0.33", dom)
        assert await ws_stream_error(ws) == "policy-violation"
        await ws.close()
        # Another address: a BOSH session and a WebSocket stream.
        ok = await asyncio.to_thread(bosh_create, port, "127.0.0.34", dom)
        assert ok.get("sid") and ok.get("type") != "terminate", ET.tostring(ok)
        ws = await ws_open(port, "127.0.0.34", dom)
        el = await ws.element(timeout=10)
        assert el.tag == "{urn:ietf:params:xml:ns:xmpp-framing}open", describe(el)
        await ws.close()
    run(go(), timeout=60)
    text = cap_bosh.log_text()
    assert "event=addr_limited addr=127.0.0.33 limit=sessions max=2" in text


def prebind_from(stack, port, source, jid):
    """POST /http-pre-bind from `source` → (status, parsed JSON)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20, source_address=(source, 0))
    try:
        conn.request("POST", "/http-pre-bind", "jid=" + jid,
                     {"Authorization": "Bearer " + stack.env.get("SB_PREBIND_SECRET", ""),
                      "Content-Type": "application/x-www-form-urlencoded"})
        r = conn.getresponse()
        return r.status, json.loads(r.read().decode())
    finally:
        conn.close()


def test_prebound_sessions_do_not_count_against_the_address(stack, cap_bosh):
    """XEP-0206 pre-bind: the sessions come from the application server's
    address, one per user it logs in, so they are not capped per address
    (the prebind secret is what admits them)."""
    from webtest import anon_domain
    dom = anon_domain(stack)
    port = cap_bosh.port

    async def go():
        held = [bosh_create(port, "127.0.0.35", dom) for _ in range(WEB_CAP)]
        assert all(b.get("sid") and b.get("type") != "terminate" for b in held), held
        for _ in range(WEB_CAP + 1):          # the address is at its cap already
            st, js = await asyncio.to_thread(prebind_from, stack, port, "127.0.0.35", dom)
            assert st == 200 and js.get("sid"), (st, js)
        over = await asyncio.to_thread(bosh_create, port, "127.0.0.35", dom)
        assert over.get("type") == "terminate", ET.tostring(over)   # the cap still holds
    run(go(), timeout=60)


# ---------------------------------------------------------------- s2s1: incoming streams

S2S_PER_ADDR_DEFAULT = 100      # [s2s] max_in_per_addr
S2S_PER_DOMAIN_DEFAULT = 20     # [s2s] max_in_per_domain


class S2SFrom(From):
    """A raw incoming server-to-server stream from a given local address."""

    def __init__(self, stack, source, remote):
        super().__init__(stack, source)
        self.remote = remote

    async def connect(self, timeout=10):
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.stack.env["SB_S2S1_LISTEN"],
                                    int(self.stack.env["SB_S2S1_PORT"]),
                                    local_addr=(self.source, 0)), timeout)
        return self

    def open_stream(self):
        self.parser = ET.XMLPullParser(("start", "end"))
        self.root, self.pending = None, []
        self.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                  "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
                  "to='%s' from='%s' version='1.0'>" % (self.stack.domain, self.remote))


def test_s2s_incoming_streams_per_address_and_per_domain(stack):
    log = Log(stack, "s2s1")

    async def opened(source, remote):
        s = S2SFrom(stack, source, remote)
        await s.connect()
        s.open_stream()
        return s

    async def go():
        held = []
        try:
            for i in range(S2S_PER_ADDR_DEFAULT):          # a flood from one address
                s = await opened("127.0.0.41", "r%d.flood.example" % i)
                await s.features()
                held.append(s)
            await refused(await opened("127.0.0.41", "one-more.flood.example"))
            ok = await opened("127.0.0.42", "other.example")  # another address
            await ok.features()
            held.append(ok)
            for i in range(S2S_PER_DOMAIN_DEFAULT - 1):       # one remote domain
                s = await opened("127.0.0.%d" % (43 + i), "other.example")
                await s.features()
                held.append(s)
            await refused(await opened("127.0.0.70", "other.example"))
        finally:
            for s in held:
                s.abort()
    run(go(), timeout=90)
    text = log.text()
    assert "event=s2s_limited addr=127.0.0.41 limit=connections max=100" in text
    assert "event=s2s_limited domain=other.example limit=domain-streams max=20" in text
    assert not [l for l in log.lines("event=stream_error") if "127.0.0.41:" in l]


# ---------------------------------------------------------------- c2s5: out of descriptors

NOFILE = 96


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_pauses_accepting_logs_once_and_resumes(stack):
    import resource
    c = ExtraC2S(stack, "c2s5", preexec_fn=lambda: resource.setrlimit(
        resource.RLIMIT_NOFILE, (NOFILE, NOFILE)))

    async def go():
        held = []
        try:
            for _ in range(NOFILE + 20):        # more than it has descriptors for
                s = From(stack, "127.0.0.51", instance="c2s5")
                await s.connect()               # the kernel's backlog takes them
                held.append(s)
            await asyncio.to_thread(wait_until, lambda: "event=accept_paused" in c.log_text(),
                                    15, "accept_paused in c2s5's log")
            t0, cpu0 = time.monotonic(), cpu_seconds(c.proc.pid)
            while time.monotonic() - t0 < 2.5:  # a measurement window: paused, not spinning
                await asyncio.sleep(0.5)
            assert cpu_seconds(c.proc.pid) - cpu0 < 0.5, "c2s5 spins while out of descriptors"
            for s in held:
                s.abort()
            held = []

            async def admitted():
                s = From(stack, "127.0.0.52", instance="c2s5")
                try:
                    await s.connect()
                    s.open_stream()
                    el = await s.element(timeout=3)
                    return el is not None and el.tag.endswith("}features")
                except (AssertionError, OSError):
                    return False
                finally:
                    s.abort()
            deadline = time.monotonic() + 15
            while not await admitted():
                assert time.monotonic() < deadline, "c2s5 never accepted again"
        finally:
            for s in held:
                s.abort()
    try:
        c.wait_ready()
        run(go(), timeout=90)
        text = c.log_text()
        assert text.count("event=accept_paused") == 1, text.count("event=accept_paused")
        assert "event=accept_resumed paused=" in text
    finally:
        assert c.stop() == 0, "c2s5 did not exit cleanly on SIGTERM"
