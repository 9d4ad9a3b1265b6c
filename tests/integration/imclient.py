"""A small hand-driven IM client for the RFC 6121 tests: a RawStream that
keeps what it has read, so a test can wait for one stanza (a roster push, a
presence from someone) without losing the others that arrive meanwhile."""

import asyncio
import secrets
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

from xmpptest import NS_BIND, NS_CLIENT, NS_SASL, NS_STANZAS, RawStream, describe, sm_for

NS_ROSTER = "jabber:iq:roster"
NS_ROSTERVER = "urn:xmpp:features:rosterver"
NS_DELAY = "urn:xmpp:delay"

IQ = "{%s}iq" % NS_CLIENT
PRESENCE = "{%s}presence" % NS_CLIENT
MESSAGE = "{%s}message" % NS_CLIENT


def error_condition(el):
    err = el.find("{%s}error" % NS_CLIENT)
    if err is None:
        return None
    for child in err:
        if child.tag.startswith("{%s}" % NS_STANZAS) and not child.tag.endswith("}text"):
            return child.tag.split("}", 1)[1]
    return "?"


def bare(jid):
    return jid.split("/", 1)[0]


class IMClient:
    def __init__(self, stack, jid, password, instance="c2s1"):
        self.stack = stack
        self.bare = jid
        self.password = password
        self.instance = instance
        self.raw = RawStream(stack, instance=instance, direct_tls=True)
        self.backlog = []
        self.features = None
        self.jid = None

    async def login(self, resource=None, timeout=30):
        async def steps():
            s = self.raw
            await s.connect()
            s.open_stream()
            await s.features()
            ok = await s.auth_plain(self.bare, self.password)
            if ok is None or ok.tag != "{%s}success" % NS_SASL:
                raise AssertionError("login failed: %s" % describe(ok))
            s.open_stream()
            self.features = await s.features()
            self.jid = await s.bind(resource)
        await asyncio.wait_for(steps(), timeout)
        return self

    def send(self, xml):
        self.raw.send(xml)

    def abort(self):
        self.raw.abort()

    async def close(self):
        if not self.raw.closed and self.raw.writer is not None:
            try:
                self.raw.send("</stream:stream>")
                await self.raw.wait_closed(timeout=5)
            except Exception:
                pass
        await self.raw.close()

    async def next(self, pred, timeout=10, what="a stanza"):
        """The first stanza (already read or still to come) matching pred."""
        for i, el in enumerate(self.backlog):
            if pred(el):
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%s: no %s within %ss; seen: %s" % (
                    self.jid, what, timeout, [describe(e)[:160] for e in self.backlog[-8:]]))
            try:
                el = await self.raw.element(timeout=left)
            except AssertionError:
                continue
            if el is None:
                raise AssertionError("%s: stream closed while waiting for %s" % (self.jid, what))
            if pred(el):
                return el
            self.backlog.append(el)

    async def nothing(self, pred, wait=0.5):
        """Assert that no matching stanza arrives within `wait` seconds."""
        try:
            el = await self.next(pred, timeout=wait)
        except AssertionError:
            return
        raise AssertionError("%s: unexpected %s" % (self.jid, describe(el)))

    async def iq(self, type_, payload, to=None, timeout=10):
        iq_id = "q" + secrets.token_hex(4)
        to_attr = " to=%s" % quoteattr(to) if to else ""
        self.send("<iq type='%s' id='%s'%s>%s</iq>" % (type_, iq_id, to_attr, payload))
        return await self.next(lambda e: e.tag == IQ and e.get("id") == iq_id
                               and e.get("type") in ("result", "error"), timeout,
                               "answer to iq %s" % iq_id)

    async def roster_get(self, ver=None):
        v = "" if ver is None else " ver=%s" % quoteattr(ver)
        iq = await self.iq("get", "<query xmlns='%s'%s/>" % (NS_ROSTER, v))
        assert iq.get("type") == "result", describe(iq)
        return iq

    async def roster_set(self, jid, name=None, groups=(), subscription=None):
        attrs = " jid=%s" % quoteattr(jid)
        if name is not None:
            attrs += " name=%s" % quoteattr(name)
        if subscription is not None:
            attrs += " subscription=%s" % quoteattr(subscription)
        g = "".join("<group>%s</group>" % x for x in groups)
        return await self.iq("set", "<query xmlns='%s'><item%s>%s</item></query>"
                             % (NS_ROSTER, attrs, g))

    def presence(self, to=None, type_=None, prio=None, status=None):
        attrs = ""
        if to:
            attrs += " to=%s" % quoteattr(to)
        if type_:
            attrs += " type='%s'" % type_
        body = ""
        if prio is not None:
            body += "<priority>%d</priority>" % prio
        if status is not None:
            body += "<status>%s</status>" % status
        self.send("<presence%s>%s</presence>" % (attrs, body) if body else "<presence%s/>" % attrs)

    def message(self, to, body, type_="chat"):
        self.send("<message to=%s type='%s'><body>%s</body></message>" % (quoteattr(to), type_, body))

    async def push(self, jid, timeout=10, **want):
        """The next roster push about `jid` whose item has the given attrs."""
        def ok(el):
            if el.tag != IQ or el.get("type") != "set":
                return False
            item = el.find("{%s}query/{%s}item" % (NS_ROSTER, NS_ROSTER))
            if item is None or item.get("jid") != jid:
                return False
            return all(item.get(k) == v for k, v in want.items())
        el = await self.next(ok, timeout, "roster push for %s %s" % (jid, want))
        self.send("<iq type='result' id=%s/>" % quoteattr(el.get("id")))
        return el

    async def presence_from(self, frm, type_=None, timeout=10, exact=False):
        """The next presence from `frm` (bare: any of its resources)."""
        def ok(el):
            if el.tag != PRESENCE or el.get("type") != type_:
                return False
            f = el.get("from") or ""
            return f == frm if exact or "/" in frm else bare(f) == frm
        return await self.next(ok, timeout, "presence type=%s from %s" % (type_, frm))

    async def message_with(self, body, timeout=10):
        return await self.next(lambda e: e.tag == MESSAGE and e.findtext("{%s}body" % NS_CLIENT) == body,
                               timeout, "message %r" % body)

    async def barrier(self, user_bare):
        """Wait until every stanza sent before to `user_bare` was handled by
        its sm: an iq to that bare JID waits in the same per-user queue."""
        await self.iq("get", "<query xmlns='urn:x-switchboard:barrier'/>", to=user_bare)


def item_of(iq):
    return iq.find("{%s}query/{%s}item" % (NS_ROSTER, NS_ROSTER))


def roster_items(iq):
    q = iq.find("{%s}query" % NS_ROSTER)
    return {} if q is None else {i.get("jid"): i for i in q.findall("{%s}item" % NS_ROSTER)}


def user_on(stack, sm):
    """A fresh account whose bare JID the router hashes to `sm`."""
    for _ in range(64):
        jid = "u%s@%s" % (secrets.token_hex(5), stack.domain)
        if sm_for(jid) == sm:
            pw = secrets.token_urlsafe(12)
            stack.sbctl("user", "add", jid, pw)
            return jid, pw
    raise AssertionError("no JID hashing to %s found" % sm)


async def befriend(a, b):
    """Mutual subscription (both) between two logged-in, available clients."""
    for x, y in ((a, b), (b, a)):
        x.presence(to=y.bare, type_="subscribe")
        await y.presence_from(x.bare, "subscribe")
        y.presence(to=x.bare, type_="subscribed")
        await x.presence_from(y.bare, "subscribed")
    await a.push(b.bare, subscription="both")
    await b.push(a.bare, subscription="both")
