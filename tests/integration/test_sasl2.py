"""XEP-0388 SASL2, XEP-0386 Bind 2 and XEP-0484 FAST, on the wire.

slixmpp 1.8 has no SASL2, so these tests speak it themselves: a small
SCRAM-SHA-256 client (hashlib/hmac) and the HT-SHA-256 hash of FAST, over
a raw TCP stream (xmpptest.RawStream, direct TLS), WebSocket and BOSH
(webtest). A slixmpp user is on the other end where messages matter."""

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
import uuid
import xml.etree.ElementTree as ET

from imclient import IMClient, MESSAGE
from webtest import NS_FRAMING, Bosh, WebSocket
from test_sbctl import psql
from xmpptest import Log, RawStream, describe, run, wait_async

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_SASL2 = "urn:xmpp:sasl:2"
NS_BIND2 = "urn:xmpp:bind:0"
NS_FAST = "urn:xmpp:fast:0"
NS_SM = "urn:xmpp:sm:3"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_STREAM = "http://etherx.jabber.org/streams"


def s2(name):
    return "{%s}%s" % (NS_SASL2, name)


def b64(data):
    return base64.b64encode(data).decode()


def condition(el):
    """The SASL condition of a SASL2 <failure/>."""
    assert el is not None and el.tag == s2("failure"), describe(el)
    return [c.tag.split("}", 1)[1] for c in el if c.tag.startswith("{%s}" % NS_SASL)][0]


# ------------------------------------------------------------------ transports
class Tcp:
    def __init__(self, stack, instance="c2s1"):
        self.raw = RawStream(stack, instance=instance, direct_tls=True)

    async def start(self):
        await self.raw.connect()
        self.raw.open_stream()
        return await self.raw.features()

    def send(self, xml):
        self.raw.send(xml)

    async def element(self, timeout=10):
        return await self.raw.element(timeout)

    async def close(self):
        if not self.raw.closed:
            self.raw.send("</stream:stream>")
        await self.raw.close()


class Ws:
    def __init__(self, stack, tls=True):
        self.stack, self.ws = stack, WebSocket(stack, tls=tls)

    async def start(self):
        assert await self.ws.connect() == 101
        self.ws.open(self.stack.domain)
        await self.ws.expect("{%s}open" % NS_FRAMING)
        return await self.ws.expect("{%s}features" % NS_STREAM)

    def send(self, xml):
        self.ws.send(xml)

    async def element(self, timeout=10):
        return await self.ws.element(timeout)

    async def close(self):
        await self.ws.close()


class BoshT:
    def __init__(self, stack):
        self.stack, self.b = stack, Bosh(stack, tls=True)

    async def start(self):
        await asyncio.to_thread(self.b.create, self.stack.domain)
        return await asyncio.to_thread(self.b.take, "{%s}features" % NS_STREAM)

    def send(self, xml):
        self.b.post(xml)

    async def element(self, timeout=10):
        def one():
            deadline = time.monotonic() + timeout
            while not self.b.pending:
                if time.monotonic() > deadline:
                    raise AssertionError("no BOSH element in time (last %s)" % self.b.last)
                self.b.post()
            return self.b.pending.pop(0)
        return await asyncio.to_thread(one)

    async def close(self):
        try:
            await asyncio.to_thread(self.b.post, type="terminate")
        except AssertionError:
            pass


# ------------------------------------------------------------------ the client
class Sasl2Client:
    """One SASL2 login over a transport; keeps what <success/> said."""

    def __init__(self, stack, jid, password, transport=None, ua=None):
        self.stack, self.bare, self.password = stack, jid, password
        self.node = jid.split("@")[0]
        self.t = transport or Tcp(stack)
        self.ua = ua or str(uuid.uuid4())
        self.features = None
        self.success = None
        self.jid = None
        self.backlog = []

    async def start(self):
        self.features = await self.t.start()
        return self.features

    def auth_feature(self):
        return self.features.find(s2("authentication"))

    def user_agent(self):
        return ("<user-agent id='%s'><software>sbtest</software><device>pytest</device>"
                "</user-agent>" % self.ua)

    async def scram(self, inline="", mech="SCRAM-SHA-256", password=None):
        """SCRAM-SHA-256 through SASL2: the final element (success/failure)."""
        cnonce = secrets.token_urlsafe(18)
        bare = "n=%s,r=%s" % (self.node, cnonce)
        self.t.send("<authenticate xmlns='%s' mechanism='%s'><initial-response>%s"
                    "</initial-response>%s%s</authenticate>"
                    % (NS_SASL2, mech, b64(("n,," + bare).encode()), self.user_agent(), inline))
        ch = await self.t.element()
        if ch is None or ch.tag != s2("challenge"):
            return ch
        first = base64.b64decode(ch.text).decode()
        attrs = dict(kv.split("=", 1) for kv in first.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", (password or self.password).encode(),
                                     base64.b64decode(attrs["s"]), int(attrs["i"]))
        ckey = hmac.new(salted, b"Client Key", "sha256").digest()
        stored = hashlib.sha256(ckey).digest()
        final = "c=biws,r=%s" % attrs["r"]
        msg = ",".join((bare, first, final)).encode()
        proof = bytes(a ^ b for a, b in zip(ckey, hmac.new(stored, msg, "sha256").digest()))
        self.t.send("<response xmlns='%s'>%s</response>"
                    % (NS_SASL2, b64((final + ",p=" + b64(proof)).encode())))
        el = await self.t.element()
        if el is not None and el.tag == s2("success"):
            skey = hmac.new(salted, b"Server Key", "sha256").digest()
            v = base64.b64decode(el.findtext(s2("additional-data")))
            assert v == b"v=" + b64(hmac.new(skey, msg, "sha256").digest()).encode(), v
        return self._took(el)

    async def fast(self, token, inline="", mech="HT-SHA-256-NONE", count=None, invalidate=False,
                   cb=b""):
        """One round trip: the initial response carries the HT hash."""
        h = hmac.new(token.encode(), b"Initiator" + cb, "sha256").digest()
        attrs = (" count='%d'" % count if count is not None else "") + \
                (" invalidate='true'" if invalidate else "")
        self.t.send("<authenticate xmlns='%s' mechanism='%s'><initial-response>%s"
                    "</initial-response>%s<fast xmlns='%s'%s/>%s</authenticate>"
                    % (NS_SASL2, mech, b64(self.node.encode() + b"\0" + h), self.user_agent(),
                       NS_FAST, attrs, inline))
        el = await self.t.element()
        if el is not None and el.tag == s2("success"):
            want = hmac.new(token.encode(), b"Responder" + cb, "sha256").digest()
            assert base64.b64decode(el.findtext(s2("additional-data"))) == want
        return self._took(el)

    def _took(self, el):
        if el is not None and el.tag == s2("success"):
            self.success = el
            self.jid = el.findtext(s2("authorization-identifier"))
        return el

    def token(self):
        t = self.success.find("{%s}token" % NS_FAST)
        assert t is not None and t.get("expiry"), describe(self.success)
        return t.get("token")

    def bound(self):
        return self.success.find("{%s}bound" % NS_BIND2)

    def send(self, xml):
        self.t.send(xml)

    async def next(self, pred, timeout=10, what="an element"):
        for i, el in enumerate(self.backlog):
            if pred(el):
                return self.backlog.pop(i)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            left = end - loop.time()
            if left <= 0:
                raise AssertionError("%s: no %s; seen %s" % (
                    self.jid, what, [describe(e)[:150] for e in self.backlog[-6:]]))
            try:
                el = await self.t.element(left)
            except (AssertionError, asyncio.TimeoutError):
                continue
            if el is None:
                raise AssertionError("%s: stream closed waiting for %s" % (self.jid, what))
            if pred(el):
                return el
            self.backlog.append(el)

    async def close(self):
        await self.t.close()


BIND = "<bind xmlns='%s'><tag>sbtest</tag></bind>" % NS_BIND2
BIND_ALL = ("<bind xmlns='%s'><tag>sbtest</tag><enable xmlns='%s'/>"
            "<enable xmlns='%s' resume='true'/></bind>" % (NS_BIND2, NS_CARBONS, NS_SM))


def resource(jid):
    return jid.split("/", 1)[1]


# ------------------------------------------------------------------ tests
def test_sasl2_is_advertised_beside_legacy_sasl_with_bind2_and_fast_inline(stack):
    async def go():
        c = Sasl2Client(stack, "x@" + stack.domain, "x")
        f = await c.start()
        legacy = [m.text for m in f.iter("{%s}mechanism" % NS_SASL)]
        auth = c.auth_feature()
        assert auth is not None, describe(f)
        mechs = [m.text for m in auth.findall(s2("mechanism"))]
        assert "SCRAM-SHA-256" in mechs and mechs == legacy, (mechs, legacy)
        inline = auth.find(s2("inline"))
        bind = inline.find("{%s}bind" % NS_BIND2)
        feats = [x.get("var") for x in bind.iter("{%s}feature" % NS_BIND2)]
        assert NS_CARBONS in feats and NS_SM in feats, feats
        assert inline.find("{%s}sm" % NS_SM) is not None
        fast = [m.text for m in inline.find("{%s}fast" % NS_FAST)]
        assert "HT-SHA-256-NONE" in fast and "HT-SHA-256-ENDP" in fast, fast
        await c.close()
    run(go())


def test_scram_via_sasl2_with_bind2_gives_a_bound_jid_that_messages_work_with(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        a = Sasl2Client(stack, a_jid, a_pw)
        await a.start()
        el = await a.scram(BIND)
        assert el.tag == s2("success"), describe(el)
        assert a.bound() is not None and a.jid.startswith(a_jid + "/sbtest."), a.jid
        bob = await IMClient(stack, b_jid, b_pw, instance="c2s2").login()
        bob.send("<message to='%s' type='chat'><body>to sasl2</body></message>" % a.jid)
        m = await a.next(lambda e: e.tag == MESSAGE, 15, "bob's message")
        assert m.findtext("{jabber:client}body") == "to sasl2"
        a.send("<message to='%s' type='chat'><body>from sasl2</body></message>" % bob.jid)
        got = await bob.message_with("from sasl2")
        assert got.get("from") == a.jid
        await bob.close()
        await a.close()
    run(go())


def test_resource_is_stable_per_user_agent_and_two_streams_of_one_do_not_collide(stack, new_user):
    jid, pw = new_user("ua")
    ua1, ua2 = str(uuid.uuid4()), str(uuid.uuid4())

    async def login(ua):
        c = Sasl2Client(stack, jid, pw, ua=ua)
        await c.start()
        el = await c.scram(BIND)
        assert el.tag == s2("success"), describe(el)
        return c

    async def go():
        first = await login(ua1)
        r1 = resource(first.jid)
        await first.close()
        # the binding goes once the stream is closed: the same device comes back
        # to the same resource
        second = None
        for _ in range(50):
            second = await login(ua1)
            if resource(second.jid) == r1:
                break
            await second.close()
            await asyncio.sleep(0.1)
        assert resource(second.jid) == r1, (second.jid, r1)
        other = await login(ua2)
        assert resource(other.jid) != r1 and other.jid.startswith(jid + "/sbtest."), other.jid
        # a second stream with ua1 while the first is bound: its own resource
        # (the stable one with a random suffix), both sessions stay
        third = await login(ua1)
        assert third.jid != second.jid and resource(third.jid).startswith(r1 + "."), third.jid
        second.send("<message to='%s'><body>one device, two streams</body></message>" % third.jid)
        m = await third.next(lambda e: e.tag == MESSAGE, 10, "the message")
        assert m.get("from") == second.jid
        for c in (second, other, third):
            await c.close()
    run(go())


def test_inline_carbons_and_stream_management_enable(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        a1 = Sasl2Client(stack, a_jid, a_pw)
        await a1.start()
        el = await a1.scram(BIND_ALL)
        assert el.tag == s2("success"), describe(el)
        enabled = a1.bound().find("{%s}enabled" % NS_SM)
        assert enabled is not None and enabled.get("resume") == "true", describe(el)
        a2 = Sasl2Client(stack, a_jid, a_pw, transport=Tcp(stack, "c2s2"))
        await a2.start()
        assert (await a2.scram(BIND_ALL)).tag == s2("success")
        # carbons go to available sessions: both come online (and see it)
        for c in (a1, a2):
            c.send("<presence/>")
        for c, other in ((a1, a2), (a2, a1)):
            await c.next(lambda e: e.tag == "{jabber:client}presence" and
                         e.get("from") == other.jid, 10, "the other's presence")
        bob = await IMClient(stack, b_jid, b_pw).login()
        # a message to a1 is carbon-copied to a2 (both enabled carbons inline)
        bob.send("<message to='%s' type='chat'><body>carbon me</body></message>" % a1.jid)
        await a1.next(lambda e: e.tag == MESSAGE and
                      e.findtext("{jabber:client}body") == "carbon me", 15, "the message")
        cc = await a2.next(lambda e: e.tag == MESSAGE and
                           e.find("{%s}received" % NS_CARBONS) is not None, 15, "a carbon")
        assert cc.get("from") == a_jid
        # stream management is on: <r/> is answered, and the server counts
        a1.send("<r xmlns='%s'/>" % NS_SM)
        ack = await a1.next(lambda e: e.tag == "{%s}a" % NS_SM, 10, "<a/>")
        assert ack.get("h") == "1", describe(ack)          # the presence
        a1.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        a1.send("<r xmlns='%s'/>" % NS_SM)
        ack = await a1.next(lambda e: e.tag == "{%s}a" % NS_SM, 10, "<a/>")
        assert ack.get("h") == "2", describe(ack)
        await bob.close()
        await a1.close()
        await a2.close()
    run(go())


def test_inline_resume_in_authenticate(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        a = Sasl2Client(stack, a_jid, a_pw)
        await a.start()
        assert (await a.scram(BIND_ALL)).tag == s2("success")
        previd = a.bound().find("{%s}enabled" % NS_SM).get("id")
        a.send("<presence/>")
        bob = await IMClient(stack, b_jid, b_pw).login()
        bob.send("<message to='%s' type='chat'><body>while away</body></message>" % a.jid)
        await a.next(lambda e: e.tag == MESSAGE, 10, "the message")
        old = a.jid
        a.t.raw.abort()
        b = Sasl2Client(stack, a_jid, a_pw, ua=a.ua, transport=Tcp(stack, "c2s2"))
        await b.start()
        # h=0: the client lost the message; it comes again after <resumed/>
        el = await b.scram("<resume xmlns='%s' previd='%s' h='0'/>%s" % (NS_SM, previd, BIND))
        assert el.tag == s2("success"), describe(el)
        assert el.find("{%s}resumed" % NS_SM) is not None and b.bound() is None, describe(el)
        assert b.jid == old, (b.jid, old)
        m = await b.next(lambda e: e.tag == MESSAGE, 10, "the resent message")
        assert m.findtext("{jabber:client}body") == "while away"
        # an unknown previd: <failed/> inline, and Bind 2 binds instead
        c = Sasl2Client(stack, a_jid, a_pw)
        await c.start()
        el = await c.scram("<resume xmlns='%s' previd='nosuchsession' h='0'/>%s" % (NS_SM, BIND))
        assert el.find("{%s}failed" % NS_SM) is not None and c.bound() is not None, describe(el)
        await bob.close()
        await b.close()
        await c.close()
    run(go())


def test_fast_token_then_one_round_trip_login_and_rotation(stack, new_user):
    jid, pw = new_user("fast")
    ua = str(uuid.uuid4())
    req = "<request-token xmlns='%s' mechanism='HT-SHA-256-NONE'/>" % NS_FAST

    async def fresh(**kw):
        c = Sasl2Client(stack, jid, pw, ua=kw.pop("ua", ua), transport=kw.pop("t", None))
        await c.start()
        return c

    async def go():
        c = await fresh()
        assert (await c.scram(BIND + req)).tag == s2("success")
        t1 = c.token()
        await c.close()
        # one round trip: <authenticate/> with the hash, <success/> back
        c = await fresh()
        el = await c.fast(t1, BIND, count=1)
        assert el.tag == s2("success") and c.bound() is not None, describe(el)
        assert c.jid.startswith(jid + "/sbtest.")
        await c.close()
        # the same count again is a replay
        c = await fresh()
        assert condition(await c.fast(t1, count=1)) == "not-authorized"
        await c.close()
        # rotation: a new token is asked with the old one; both work until the
        # new one has been used, then the old one is gone
        c = await fresh()
        assert (await c.fast(t1, req, count=2)).tag == s2("success")
        t2 = c.token()
        assert t2 != t1
        await c.close()
        c = await fresh()
        assert (await c.fast(t1, count=3)).tag == s2("success"), "previous token still valid"
        await c.close()
        c = await fresh()
        assert (await c.fast(t2, count=1)).tag == s2("success")
        await c.close()
        c = await fresh()
        assert condition(await c.fast(t1, count=4)) == "not-authorized", "retired by t2's use"
        await c.close()
        # bound to the client: another user-agent id cannot use it
        c = await fresh(ua=str(uuid.uuid4()))
        assert condition(await c.fast(t2)) == "not-authorized"
        await c.close()
        # a made-up token, and a wrong mechanism
        c = await fresh()
        assert condition(await c.fast(b64(secrets.token_bytes(32)))) == "not-authorized"
        await c.close()
        # invalidate: this login works, then the token is gone
        c = await fresh()
        assert (await c.fast(t2, invalidate=True)).tag == s2("success")
        await c.close()
        c = await fresh()
        assert condition(await c.fast(t2)) == "not-authorized"
        await c.close()
    run(go())


def test_fast_token_expires(stack, new_user):
    jid, pw = new_user("fexp")
    ua = str(uuid.uuid4())

    async def go():
        c = Sasl2Client(stack, jid, pw, ua=ua)
        await c.start()
        assert (await c.scram("<request-token xmlns='%s' mechanism='HT-SHA-256-NONE'/>"
                              % NS_FAST)).tag == s2("success")
        t = c.token()
        await c.close()
        node = jid.split("@")[0]
        psql(stack, "UPDATE fast_tokens SET expires_at = now() - interval '1 second' "
                   "WHERE username = '%s'" % node)
        c = Sasl2Client(stack, jid, pw, ua=ua)
        await c.start()
        assert condition(await c.fast(t)) == "not-authorized"
        await c.close()
    run(go())


def test_fast_with_tls_server_end_point(stack, new_user):
    jid, pw = new_user("fendp")
    ua = str(uuid.uuid4())

    def endpoint(c):
        der = c.t.raw.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return hashlib.sha256(der).digest()

    async def go():
        c = Sasl2Client(stack, jid, pw, ua=ua)
        await c.start()
        assert (await c.scram("<request-token xmlns='%s' mechanism='HT-SHA-256-ENDP'/>"
                              % NS_FAST)).tag == s2("success")
        t = c.token()
        await c.close()
        c = Sasl2Client(stack, jid, pw, ua=ua)
        await c.start()
        el = await c.fast(t, mech="HT-SHA-256-ENDP", cb=endpoint(c))
        assert el.tag == s2("success"), describe(el)
        await c.close()
        # the token is for -ENDP: -NONE with it fails
        c = Sasl2Client(stack, jid, pw, ua=ua)
        await c.start()
        assert condition(await c.fast(t)) == "not-authorized"
        await c.close()
    run(go())


def test_wrong_password_and_malformed_sasl2_get_failures_and_one_log_line(stack, new_user):
    jid, pw = new_user("bad")
    cases = [
        ("<authenticate xmlns='%s'/>" % NS_SASL2, "invalid-mechanism", "bad mechanism"),
        ("<authenticate xmlns='%s' mechanism='SCRAM-SHA-256'><user-agent id='a b'/>"
         "</authenticate>" % NS_SASL2, "malformed-request", "bad user-agent id"),
        ("<authenticate xmlns='%s' mechanism='SCRAM-SHA-256'><request-token xmlns='%s' "
         "mechanism='HT-SHA-256-NONE'/></authenticate>" % (NS_SASL2, NS_FAST),
         "malformed-request", "FAST needs a user-agent id"),
        ("<authenticate xmlns='%s' mechanism='SCRAM-SHA-256'><user-agent id='u1'/>"
         "<resume xmlns='%s' h='x'/></authenticate>" % (NS_SASL2, NS_SM),
         "malformed-request", "bad resume"),
        ("<response xmlns='%s'>AAAA</response>" % NS_SASL2, "malformed-request",
         "response-without-authenticate"),
        ("<authenticate xmlns='%s' mechanism='NOPE'><initial-response>=</initial-response>"
         "</authenticate>" % NS_SASL2, "invalid-mechanism", None),
        ("<authenticate xmlns='%s' mechanism='SCRAM-SHA-256'><initial-response>!!"
         "</initial-response></authenticate>" % NS_SASL2, "incorrect-encoding", None),
    ]

    async def go():
        c = Sasl2Client(stack, jid, pw)
        await c.start()
        assert condition(await c.scram(password="wrong")) == "not-authorized"
        await c.close()
        for xml, cond, reason in cases:
            log = Log(stack, "c2s1")
            c = Sasl2Client(stack, jid, pw)
            await c.start()
            c.send(xml)
            el = await c.t.element()
            assert condition(el) == cond, (xml, describe(el))
            if reason:
                assert el.findtext(s2("text")) == reason
                await wait_async(lambda: log.lines("sasl2_malformed"), 5, "the log line")
                assert len(log.lines("sasl2_malformed")) == 1, log.text()
            # the stream lives on: a correct login still works
            assert (await c.scram(BIND)).tag == s2("success"), xml
            await c.close()
    run(go())


def test_legacy_sasl_still_works_next_to_sasl2(stack, new_user):
    jid, pw = new_user("leg")

    async def go():
        c = await IMClient(stack, jid, pw).login()
        assert c.jid.startswith(jid + "/")
        await c.close()
    run(go())


def test_sasl2_over_websocket(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        a = Sasl2Client(stack, a_jid, a_pw, transport=Ws(stack))
        f = await a.start()
        assert a.auth_feature() is not None, describe(f)
        el = await a.scram(BIND_ALL + "<request-token xmlns='%s' mechanism='HT-SHA-256-NONE'/>"
                           % NS_FAST)
        assert el.tag == s2("success") and a.bound().find("{%s}enabled" % NS_SM) is not None, \
            describe(el)
        token = a.token()
        bob = await IMClient(stack, b_jid, b_pw).login()
        bob.send("<message to='%s' type='chat'><body>to ws</body></message>" % a.jid)
        await a.next(lambda e: e.tag == MESSAGE and
                     e.findtext("{jabber:client}body") == "to ws", 15, "the message")
        await a.close()
        # FAST over WebSocket too
        w = Sasl2Client(stack, a_jid, a_pw, transport=Ws(stack), ua=a.ua)
        await w.start()
        assert (await w.fast(token, BIND)).tag == s2("success")
        await w.close()
        # plain ws://: SASL2 is there, FAST (a password for one device) is not
        p = Sasl2Client(stack, a_jid, a_pw, transport=Ws(stack, tls=False))
        await p.start()
        inline = p.auth_feature().find(s2("inline"))
        assert inline.find("{%s}bind" % NS_BIND2) is not None
        assert inline.find("{%s}fast" % NS_FAST) is None, describe(p.features)
        assert condition(await p.fast(token)) == "invalid-mechanism"
        await p.close()
        await bob.close()
    run(go())


def test_sasl2_over_bosh(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        a = Sasl2Client(stack, a_jid, a_pw, transport=BoshT(stack))
        await a.start()
        inline = a.auth_feature().find(s2("inline"))
        assert inline.find("{%s}sm" % NS_SM) is None      # BOSH: no XEP-0198
        el = await a.scram(BIND + "<request-token xmlns='%s' mechanism='HT-SHA-256-NONE'/>"
                           % NS_FAST)
        assert el.tag == s2("success") and a.bound() is not None, describe(el)
        token = a.token()
        bob = await IMClient(stack, b_jid, b_pw).login()
        bob.send("<message to='%s' type='chat'><body>to bosh</body></message>" % a.jid)
        await a.next(lambda e: e.tag == MESSAGE and
                     e.findtext("{jabber:client}body") == "to bosh", 15, "the message")
        await a.close()
        b = Sasl2Client(stack, a_jid, a_pw, transport=BoshT(stack), ua=a.ua)
        await b.start()
        assert (await b.fast(token, BIND)).tag == s2("success")
        await b.close()
        await bob.close()
    run(go())
