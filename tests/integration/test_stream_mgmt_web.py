"""XEP-0198 stream management over sb-bosh: offered and working on
WebSocket (RFC 7395: <enable/>, <r/>/<a/> both ways, resumption after the
WebSocket connection was dropped), a session resumed across transports (a
WebSocket session on a TCP front-end and a TCP session on WebSocket: the
queue lives in the user's sm, not in the front-end), and never offered on
BOSH, which acknowledges requests itself (XEP-0124 §9)."""

import asyncio
import base64
import time

from imclient import IMClient, MESSAGE
from test_stream_mgmt import NS_SM, STANZAS, SMClient, bodies, failed_condition, sm
from webtest import NS_BIND, NS_FRAMING, NS_SASL, NS_STREAM, Bosh, WebSocket, WsClosed
from xmpptest import describe, run


class WsSMClient:
    """A WebSocket (wss, SASL PLAIN) client that counts, like a XEP-0198
    client, the stanzas it read since <enabled/> or <resumed/>."""

    def __init__(self, stack, jid, password):
        self.stack, self.bare, self.password = stack, jid, password
        self.ws = WebSocket(stack, tls=True)
        self.h = 0
        self.counting = False
        self.sm_id = None
        self.jid = None
        self.features = None
        self.backlog = []

    async def element(self, timeout=10):
        el = await self.ws.element(timeout)
        if el.tag in (sm("enabled"), sm("resumed")):
            self.counting = True
        elif self.counting and el.tag in STANZAS:
            self.h += 1
        return el

    async def next(self, pred, timeout=10, what="an element"):
        for i, el in enumerate(self.backlog):
            if pred(el):
                return self.backlog.pop(i)
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("%s: no %s within %ss; seen %s" % (
                    self.jid, what, timeout, [describe(e)[:120] for e in self.backlog[-6:]]))
            try:
                el = await self.element(left)
            except asyncio.TimeoutError:
                continue
            if pred(el):
                return el
            self.backlog.append(el)

    def send(self, xml):
        self.ws.send(xml)

    async def authenticate(self):
        """Connect, open, SASL PLAIN (wss), open again: the post-SASL features."""
        assert await self.ws.connect() == 101
        self.ws.open(self.stack.domain)
        await self.ws.expect("{%s}open" % NS_FRAMING)
        await self.ws.expect("{%s}features" % NS_STREAM)
        token = base64.b64encode(b"\0" + self.bare.split("@")[0].encode() + b"\0" +
                                 self.password.encode()).decode()
        self.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, token))
        await self.ws.expect("{%s}success" % NS_SASL)
        self.ws.open(self.stack.domain)
        await self.ws.expect("{%s}open" % NS_FRAMING)
        self.features = await self.ws.expect("{%s}features" % NS_STREAM)
        return self.features

    async def login(self):
        async def steps():
            await self.authenticate()
            self.send("<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='%s'/></iq>"
                      % NS_BIND)
            iq = await self.ws.expect("{jabber:client}iq", 20)
            self.jid = iq.find("{%s}bind/{%s}jid" % (NS_BIND, NS_BIND)).text
        await asyncio.wait_for(steps(), 30)
        return self

    async def enable(self):
        self.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
        el = await self.next(lambda e: e.tag in (sm("enabled"), sm("failed")), 10, "<enabled/>")
        assert el.tag == sm("enabled"), describe(el)
        self.sm_id = el.get("id")
        return el

    async def resume(self, previd, h):
        async def steps():
            feats = await self.authenticate()
            assert feats.find(sm("sm")) is not None, describe(feats)
            self.h = h
            self.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, previd, h))
            return await self.next(lambda e: e.tag in (sm("resumed"), sm("failed")), 20,
                                   "<resumed/> or <failed/>")
        return await asyncio.wait_for(steps(), 30)

    async def message_with(self, body, timeout=10):
        return await self.next(lambda e: e.tag == MESSAGE and
                               e.findtext("{jabber:client}body") == body, timeout, body)

    def abort(self):
        """The network goes away: no <close/>, no WebSocket close frame."""
        if self.ws.writer is not None:
            self.ws.writer.transport.abort()

    async def close(self):
        await self.ws.close()


def test_websocket_offers_sm_after_sasl_and_acks_both_ways(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        alice = await WsSMClient(stack, a_jid, a_pw).login()
        bob = await IMClient(stack, b_jid, b_pw, instance="c2s1").login()
        try:
            assert alice.features.find(sm("sm")) is not None, describe(alice.features)
            en = await alice.enable()
            assert en.get("resume") == "true" and len(en.get("id") or "") >= 16, describe(en)
            alice.send("<r xmlns='%s'/>" % NS_SM)
            assert (await alice.next(lambda e: e.tag == sm("a"))).get("h") == "0"
            alice.send("<iq xmlns='jabber:client' type='get' id='p1'>"
                       "<ping xmlns='urn:xmpp:ping'/></iq>")
            iq = await alice.next(lambda e: e.get("id") == "p1")
            assert iq.get("type") == "result", describe(iq)
            alice.send("<r xmlns='%s'/>" % NS_SM)
            assert (await alice.next(lambda e: e.tag == sm("a"))).get("h") == "1"
            for i in range(5):
                bob.message(alice.jid, "w%d" % i)
            for i in range(5):
                await alice.message_with("w%d" % i)
            # sm_ack_every = 5: the server asks on its own, over WebSocket too
            await alice.next(lambda e: e.tag == sm("r"), 10, "<r/>")
            assert alice.h == 6, alice.h          # 1 iq result + 5 messages
            alice.send("<a xmlns='%s' h='%d'/>" % (NS_SM, alice.h))
            alice.send("<r xmlns='%s'/>" % NS_SM)  # the stream still works after the <a/>
            assert (await alice.next(lambda e: e.tag == sm("a"))).get("h") == "1"
        finally:
            await alice.close()
            await bob.close()
    run(go(), timeout=60)


def test_websocket_session_resumes_on_websocket_after_the_connection_dropped(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        alice = await WsSMClient(stack, a_jid, a_pw).login()
        bob = await IMClient(stack, b_jid, b_pw, instance="c2s2").login()
        again = WsSMClient(stack, a_jid, a_pw)
        try:
            await alice.enable()
            alice.send("<iq xmlns='jabber:client' type='get' id='p1'>"
                       "<ping xmlns='urn:xmpp:ping'/></iq>")     # the sm counts it: h=1
            await alice.next(lambda e: e.get("id") == "p1")
            bob.message(alice.jid, "seen")
            await alice.message_with("seen")
            h = alice.h
            bob.message(alice.jid, "unacked")
            await alice.message_with("unacked")     # read, its <a/> lost with the network
            alice.abort()
            bob.message(alice.jid, "while-gone")
            await bob.barrier(a_jid)
            el = await again.resume(alice.sm_id, h)
            assert el.tag == sm("resumed") and el.get("previd") == alice.sm_id, describe(el)
            got = [await again.next(lambda e: e.tag == MESSAGE, 10, "message") for _ in range(2)]
            assert bodies(got) == ["unacked", "while-gone"], [describe(m) for m in got]
            assert all(m.get("to") == alice.jid for m in got), [describe(m) for m in got]
            bob.message(alice.jid, "after")
            await again.message_with("after")
            again.send("<r xmlns='%s'/>" % NS_SM)   # the server's count survived: the ping
            a = await again.next(lambda e: e.tag == sm("a"))
            assert a.get("h") == "1", describe(a)
        finally:
            await again.close()
            await bob.close()
    run(go(), timeout=60)


def test_websocket_session_resumes_on_a_tcp_front_end_and_tcp_on_websocket(stack, two_users):
    """The queue lives in the user's sm: a WebSocket stream dropped on sb-bosh
    resumes on sb-c2s, and that TCP stream, dropped in turn, resumes on
    WebSocket — same full JID, nothing lost, nothing twice."""
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        web = await WsSMClient(stack, a_jid, a_pw).login()
        bob = await IMClient(stack, b_jid, b_pw, instance="c2s2").login()
        tcp = SMClient(stack, a_jid, a_pw, instance="c2s1")
        web2 = WsSMClient(stack, a_jid, a_pw)
        try:
            await web.enable()
            bob.message(web.jid, "ws-unacked")
            await web.message_with("ws-unacked")
            web.abort()
            bob.message(web.jid, "ws-gone")
            await bob.barrier(a_jid)
            el = await tcp.resume(web.sm_id, 0)
            assert el.tag == sm("resumed"), describe(el)
            got = [await tcp.next(lambda e: e.tag == MESSAGE, 10, "message") for _ in range(2)]
            assert bodies(got) == ["ws-unacked", "ws-gone"], [describe(m) for m in got]
            assert all(m.get("to") == web.jid for m in got), [describe(m) for m in got]
            tcp.ack()                               # both acknowledged on TCP
            bob.message(web.jid, "tcp-unacked")
            await tcp.message_with("tcp-unacked")
            h = tcp.h - 1
            tcp.abort()
            bob.message(web.jid, "tcp-gone")
            await bob.barrier(a_jid)
            el = await web2.resume(web.sm_id, h)
            assert el.tag == sm("resumed"), describe(el)
            got = [await web2.next(lambda e: e.tag == MESSAGE, 10, "message") for _ in range(2)]
            assert bodies(got) == ["tcp-unacked", "tcp-gone"], [describe(m) for m in got]
            assert all(m.get("to") == web.jid for m in got), [describe(m) for m in got]
            try:
                extra = await web2.next(lambda e: e.tag == MESSAGE, 0.5)
            except AssertionError:
                extra = None
            assert extra is None, describe(extra)
        finally:
            tcp.abort()
            for c in (web2, bob):
                await c.close()
    run(go(), timeout=60)


def test_websocket_close_ends_a_managed_session_at_once(stack, two_users):
    """<close/> is the clean end (RFC 7395 §3.6): the session is not kept
    for resumption, so <resume/> fails and contacts see it go."""
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        alice = await WsSMClient(stack, a_jid, a_pw).login()
        late = WsSMClient(stack, a_jid, a_pw)
        try:
            await alice.enable()
            alice.send("<close xmlns='%s'/>" % NS_FRAMING)
            await alice.next(lambda e: e.tag == "{%s}close" % NS_FRAMING, 10, "<close/>")
            await alice.close()
            el = await late.resume(alice.sm_id, 0)
            assert failed_condition(el) == "item-not-found"
        finally:
            await late.close()
    run(go(), timeout=60)


def test_bosh_does_not_offer_stream_management(stack, two_users):
    """XEP-0198 is not for BOSH (it acknowledges requests itself): no <sm/>
    feature after SASL, and <enable/> is refused with unexpected-request."""
    a_jid, a_pw = two_users[0]
    b = Bosh(stack, tls=True)
    b.create(stack.domain)
    token = base64.b64encode(b"\0" + a_jid.split("@")[0].encode() + b"\0" +
                             a_pw.encode()).decode()
    b.post("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, token))
    b.take("{%s}success" % NS_SASL)
    b.pending.clear()                       # the features before SASL
    b.post(to=stack.domain, xmpp__restart="true")
    feats = b.take("{%s}features" % NS_STREAM)
    assert feats.find("{%s}bind" % NS_BIND) is not None, b.last
    assert feats.find(sm("sm")) is None, b.last
    b.bind()
    b.post("<enable xmlns='%s' resume='true'/>" % NS_SM)
    el = b.take(sm("failed"))
    assert failed_condition(el) == "unexpected-request"
    b.post("<r xmlns='%s'/>" % NS_SM)
    assert failed_condition(b.take(sm("failed"))) == "unexpected-request"
