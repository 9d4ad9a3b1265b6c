"""What the server answers itself (XEP-0030 disco, XEP-0054 vCard, XEP-0049
private storage, XEP-0092 version, XEP-0012 last activity, XEP-0199 ping)
and XEP-0191 blocking, over raw streams so every byte of the answers is
checked."""

import asyncio
import secrets

import pytest

from xmpptest import RawStream, describe, run, wait_async, NS_CLIENT, NS_STANZAS

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_VCARD = "vcard-temp"
NS_PRIVATE = "jabber:iq:private"
NS_VERSION = "jabber:iq:version"
NS_LAST = "jabber:iq:last"
NS_PING = "urn:xmpp:ping"
NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"

# Every feature the server advertises, each one implemented by an sm module
# (the list is derived from sm/modules.c). A module that adds a feature
# adds it here, so the test keeps the advertisement honest.
SERVER_FEATURES = {
    NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, "jabber:iq:roster", NS_VERSION, NS_LAST,
    NS_VCARD, NS_PRIVATE, NS_BLOCKING, "msgoffline", "urn:xmpp:carbons:2",
} | {"http://jabber.org/protocol/pubsub" + f for f in (
    "", "#publish", "#publish-options", "#auto-create", "#retract-items", "#retrieve-items",
    "#item-ids", "#delete-nodes", "#config-node", "#persistent-items", "#last-published",
    "#access-presence", "#access-open", "#access-whitelist")}   # PEP (sm/mod_pep.c)


def q(ns, tag):
    return "{%s}%s" % (ns, tag)


class Client:
    """A raw, logged-in stream with iq request/response matching; stanzas
    that are not the awaited answer are kept in `others`."""

    def __init__(self, stream, bare):
        self.s = stream
        self.bare = bare
        self.full = stream.jid
        self.others = []

    @classmethod
    async def login(cls, stack, account, instance="c2s1"):
        jid, pw = account
        s = RawStream(stack, instance=instance, direct_tls=True)
        await s.login(jid, pw)
        return cls(s, jid)

    def send(self, xml):
        self.s.send(xml)

    async def iq(self, typ, payload, to=None, timeout=10):
        iid = "t" + secrets.token_hex(4)
        to_attr = " to='%s'" % to if to else ""
        self.send("<iq type='%s' id='%s'%s>%s</iq>" % (typ, iid, to_attr, payload))
        return await self.wait_for(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == iid,
                                   timeout, "iq answer %s" % iid)

    async def wait_for(self, pred, timeout=10, what="element"):
        for i, el in enumerate(self.others):
            if pred(el):
                return self.others.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError("%s: no %s within %ss (kept: %s)" % (
                    self.full, what, timeout, [describe(e)[:120] for e in self.others]))
            el = await self.s.element(left)
            if el is None:
                raise AssertionError("%s: stream closed waiting for %s" % (self.full, what))
            if pred(el):
                return el
            self.others.append(el)

    async def message(self, body, timeout=10):
        def is_msg(el):
            b = el.find(q(NS_CLIENT, "body"))
            return el.tag == q(NS_CLIENT, "message") and b is not None and b.text == body
        return await self.wait_for(is_msg, timeout, "message %r" % body)

    async def close(self):
        self.s.send("</stream:stream>")
        await self.s.close()


def error_condition(el):
    """(type, defined condition, [other children of <error/>]) or None."""
    err = el.find(q(NS_CLIENT, "error"))
    if el.get("type") != "error" or err is None:
        return None
    cond, extra = None, []
    for child in err:
        if child.tag.startswith("{%s}" % NS_STANZAS):
            cond = cond or child.tag.split("}", 1)[1]
        else:
            extra.append(child.tag)
    return err.get("type"), cond, extra


def condition(el):
    c = error_condition(el)
    return c[1] if c else None


def result_payload(el, ns, tag):
    assert el.get("type") == "result", describe(el)
    p = el.find(q(ns, tag))
    assert p is not None, describe(el)
    return p


async def logins(stack, *accounts):
    return [await Client.login(stack, a, instance="c2s%d" % (1 + i % 2))
            for i, a in enumerate(accounts)]


async def make_contact(watcher, target):
    """watcher subscribes to target's presence and target approves (RFC 6121
    §3.1), so the server answers watcher's queries about target's account."""
    target.send("<presence/>")
    watcher.send("<presence to='%s' type='subscribe'/>" % target.bare)
    await target.wait_for(lambda el: el.tag == q(NS_CLIENT, "presence") and
                          el.get("type") == "subscribe", what="subscription request")
    target.send("<presence to='%s' type='subscribed'/>" % watcher.bare)


async def until_result(ask, timeout=10):
    """Repeat an iq until it is answered with a result (the approval reaches
    the target's sm asynchronously); returns that result."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        r = await ask()
        if r.get("type") == "result":
            return r
        assert loop.time() < deadline, "still %s" % describe(r)
        await asyncio.sleep(0.05)


async def close_all(*clients):
    for c in clients:
        await c.close()


# ------------------------------------------------------------------ disco
def test_disco_info_on_server_lists_exactly_the_implemented_features(stack, new_user):
    async def go():
        (a,) = await logins(stack, new_user("dsc"))
        try:
            r = await a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=stack.domain)
            qry = result_payload(r, NS_DISCO_INFO, "query")
            ids = [(i.get("category"), i.get("type")) for i in qry.findall(q(NS_DISCO_INFO, "identity"))]
            assert ids == [("server", "im")]
            feats = [f.get("var") for f in qry.findall(q(NS_DISCO_INFO, "feature"))]
            assert len(feats) == len(set(feats)), feats
            assert set(feats) == SERVER_FEATURES
            r = await a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to=stack.domain)
            items = result_payload(r, NS_DISCO_ITEMS, "query")
            # the upload service (XEP-0363), the MUC service (sb-muc) and
            # the configured external component (XEP-0114), all subdomains
            assert [i.get("jid") for i in items.findall(q(NS_DISCO_ITEMS, "item"))] == \
                ["upload." + stack.domain, "conference." + stack.domain,
                 stack.env["SB_COMPONENT_DOMAIN"]], describe(r)
            r = await a.iq("set", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=stack.domain)
            assert condition(r) == "feature-not-implemented"
        finally:
            await close_all(a)
    run(go())


def test_disco_on_an_account_is_answered_by_the_server_for_contacts(stack, new_user):
    async def go():
        a, b, c = await logins(stack, new_user("dsa"), new_user("dsb"), new_user("dsc"))
        try:
            await make_contact(a, b)
            await b.close()                 # answered for bob while he is offline
            r = await until_result(lambda: a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO,
                                                to=b.bare))
            qry = result_payload(r, NS_DISCO_INFO, "query")
            assert r.get("from") == b.bare
            ids = [(i.get("category"), i.get("type")) for i in qry.findall(q(NS_DISCO_INFO, "identity"))]
            assert ids == [("account", "registered"), ("pubsub", "pep")]
            feats = {f.get("var") for f in qry.findall(q(NS_DISCO_INFO, "feature"))}
            assert {NS_DISCO_INFO, NS_PING, NS_LAST, NS_VCARD} <= feats
            r = await a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to=b.bare)
            result_payload(r, NS_DISCO_ITEMS, "query")
            # Not a contact, or no such account: the same service-unavailable.
            r = await c.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=b.bare)
            assert condition(r) == "service-unavailable"
            ghost = "nobody%s@%s" % (secrets.token_hex(4), stack.domain)
            r = await a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=ghost)
            assert condition(r) == "service-unavailable"
            r = await c.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=c.bare)
            result_payload(r, NS_DISCO_INFO, "query")          # one's own account
        finally:
            await close_all(a, c)
    run(go())


# ------------------------------------------------------------------ vCard
def test_vcard_round_trip_and_another_user_reads_it(stack, new_user):
    async def go():
        a, b = await logins(stack, new_user("vca"), new_user("vcb"))
        try:
            r = await b.iq("get", "<vCard xmlns='vcard-temp'/>")
            card = result_payload(r, NS_VCARD, "vCard")
            assert len(card) == 0                       # none yet: empty <vCard/>
            fn = "Alice Q. <Tester> & Co %s" % secrets.token_hex(3)
            esc = fn.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            r = await a.iq("set", "<vCard xmlns='vcard-temp'><FN>%s</FN><NICKNAME>al</NICKNAME>"
                                  "</vCard>" % esc)
            assert r.get("type") == "result", describe(r)
            for who, to in ((a, None), (b, a.bare)):
                r = await who.iq("get", "<vCard xmlns='vcard-temp'/>", to=to)
                card = result_payload(r, NS_VCARD, "vCard")
                assert card.findtext(q(NS_VCARD, "FN")) == fn
                assert card.findtext(q(NS_VCARD, "NICKNAME")) == "al"
            r = await b.iq("set", "<vCard xmlns='vcard-temp'><FN>x</FN></vCard>", to=a.bare)
            assert condition(r) == "forbidden"
        finally:
            await close_all(a, b)
    run(go())


def test_vcard_over_the_size_limit_is_not_acceptable(stack, new_user):
    async def go():
        (a,) = await logins(stack, new_user("vcl"))
        try:
            photo = "A" * (70 * 1024)
            r = await a.iq("set", "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>%s</BINVAL></PHOTO>"
                                  "</vCard>" % photo)
            assert error_condition(r)[:2] == ("modify", "not-acceptable")
            r = await a.iq("get", "<vCard xmlns='vcard-temp'/>")
            assert len(result_payload(r, NS_VCARD, "vCard")) == 0
        finally:
            await close_all(a)
    run(go())


# ------------------------------------------------------------------ private storage
def test_private_storage_round_trip_and_refusals(stack, new_user):
    async def go():
        a, b = await logins(stack, new_user("pva"), new_user("pvb"))
        try:
            r = await a.iq("set", "<query xmlns='jabber:iq:private'>"
                                  "<prefs xmlns='x:test:prefs'><colour>blue</colour></prefs>"
                                  "<prefs xmlns='x:test:prefs'><size>9</size></prefs></query>")
            assert r.get("type") == "result", describe(r)
            r = await a.iq("get", "<query xmlns='jabber:iq:private'><prefs xmlns='x:test:prefs'/>"
                                  "</query>")
            got = result_payload(r, NS_PRIVATE, "query").findall(q("x:test:prefs", "prefs"))
            assert [p.findtext(q("x:test:prefs", "colour")) for p in got] == ["blue", None]
            assert got[1].findtext(q("x:test:prefs", "size")) == "9"
            # Nothing stored for that namespace: the request comes back empty.
            r = await a.iq("get", "<query xmlns='jabber:iq:private'><other xmlns='x:none'/></query>")
            other = result_payload(r, NS_PRIVATE, "query").find(q("x:none", "other"))
            assert other is not None and len(other) == 0
            # Another user sees nothing of it.
            r = await b.iq("get", "<query xmlns='jabber:iq:private'><prefs xmlns='x:test:prefs'/>"
                                  "</query>")
            assert len(result_payload(r, NS_PRIVATE, "query").find(q("x:test:prefs", "prefs"))) == 0
            for ns in ("vcard-temp", "jabber:client", "jabber:server", "http://jabber.org/x"):
                r = await a.iq("set", "<query xmlns='jabber:iq:private'><x xmlns='%s'/></query>" % ns)
                assert condition(r) == "not-acceptable", ns
            r = await a.iq("get", "<query xmlns='jabber:iq:private'/>")
            assert condition(r) == "bad-request"
            r = await b.iq("get", "<query xmlns='jabber:iq:private'><prefs xmlns='x:test:prefs'/>"
                                  "</query>", to=a.bare)
            assert condition(r) == "forbidden"
        finally:
            await close_all(a, b)
    run(go())


# ------------------------------------------------------------------ version, last, ping
def test_server_software_version(stack, new_user):
    async def go():
        (a,) = await logins(stack, new_user("ver"))
        try:
            r = await a.iq("get", "<query xmlns='jabber:iq:version'/>", to=stack.domain)
            qry = result_payload(r, NS_VERSION, "query")
            assert qry.findtext(q(NS_VERSION, "name")) == "Switchboard"
            assert qry.findtext(q(NS_VERSION, "version"))
            r = await a.iq("set", "<query xmlns='jabber:iq:version'/>", to=stack.domain)
            assert condition(r) == "feature-not-implemented"
        finally:
            await close_all(a)
    run(go())


def test_last_activity_of_a_user_after_logout_and_of_the_server(stack, new_user):
    async def go():
        a, b, c = await logins(stack, new_user("laa"), new_user("lab"), new_user("lac"))
        try:
            r = await a.iq("get", "<query xmlns='jabber:iq:last'/>", to=stack.domain)
            assert int(result_payload(r, NS_LAST, "query").get("seconds")) >= 0
            await make_contact(a, b)
            r = await until_result(lambda: a.iq("get", "<query xmlns='jabber:iq:last'/>",
                                                to=b.bare))
            assert result_payload(r, NS_LAST, "query").get("seconds") == "0"   # online
            r = await c.iq("get", "<query xmlns='jabber:iq:last'/>", to=b.bare)
            assert condition(r) == "service-unavailable"                       # no contact
            b.send("<presence type='unavailable'><status>gone fishing</status></presence>")
            await b.close()
            # The session end reaches the sm asynchronously: poll until seen.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while True:
                r = await a.iq("get", "<query xmlns='jabber:iq:last'/>", to=b.bare)
                qry = result_payload(r, NS_LAST, "query")
                if qry.get("seconds") != "0" or qry.text:
                    break
                assert loop.time() < deadline, "last activity still 0 after logout"
                await asyncio.sleep(0.1)
            assert 0 <= int(qry.get("seconds")) < 30
            assert qry.text == "gone fishing"
        finally:
            await close_all(a, c)
    run(go())


def test_ping_the_server_and_a_users_bare_jid(stack, new_user):
    async def go():
        a, b, c = await logins(stack, new_user("pga"), new_user("pgb"), new_user("pgc"))
        try:
            r = await a.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=stack.domain)
            assert r.get("type") == "result", describe(r)
            r = await a.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
            assert r.get("type") == "result", describe(r)
            # The server answers for an account, online or not (XEP-0199 §4.3),
            # to the user and to contacts.
            await make_contact(a, b)
            await b.close()
            r = await until_result(lambda: a.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=b.bare))
            assert r.get("from") == b.bare, describe(r)
            r = await c.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=b.bare)
            assert condition(r) == "service-unavailable"
            r = await c.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=c.bare)
            assert r.get("type") == "result", describe(r)
            ghost = "nobody%s@%s" % (secrets.token_hex(4), stack.domain)
            r = await a.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=ghost)
            assert condition(r) == "service-unavailable"
            r = await a.iq("set", "<ping xmlns='urn:xmpp:ping'/>", to=stack.domain)
            assert condition(r) == "feature-not-implemented"
            r = await a.iq("get", "<nothing xmlns='urn:x:unknown'/>", to=stack.domain)
            assert condition(r) == "service-unavailable"
        finally:
            await close_all(a, c)
    run(go())


# ------------------------------------------------------------------ blocking
def block_item(jid):
    return "<item jid='%s'/>" % jid


def is_push(kind):
    def pred(el):
        return (el.tag == q(NS_CLIENT, "iq") and el.get("type") == "set" and
                el.find(q(NS_BLOCKING, kind)) is not None)
    return pred


def test_blocked_contact_is_refused_both_ways_until_unblocked(stack, new_user):
    async def go():
        a, b = await logins(stack, new_user("bka"), new_user("bkb"))
        try:
            r = await a.iq("get", "<blocklist xmlns='urn:xmpp:blocking'/>")
            assert len(result_payload(r, NS_BLOCKING, "blocklist")) == 0
            r = await a.iq("set", "<block xmlns='urn:xmpp:blocking'>%s</block>" % block_item(b.bare))
            assert r.get("type") == "result", describe(r)
            await a.wait_for(is_push("block"), what="block push")
            r = await a.iq("get", "<blocklist xmlns='urn:xmpp:blocking'/>")
            items = result_payload(r, NS_BLOCKING, "blocklist").findall(q(NS_BLOCKING, "item"))
            assert [i.get("jid") for i in items] == [b.bare]

            # bob → alice: the message is not delivered, bob hears service-unavailable.
            b.send("<message to='%s' type='chat' id='m1'><body>blocked-1</body></message>" % a.full)
            err = await b.wait_for(lambda el: el.get("id") == "m1", what="message error")
            assert condition(err) == "service-unavailable"
            r = await b.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=a.full)
            assert condition(r) == "service-unavailable"
            r = await b.iq("get", "<vCard xmlns='vcard-temp'/>", to=a.bare)
            assert condition(r) == "service-unavailable"

            # alice → bob: not-acceptable with <blocked/>.
            a.send("<message to='%s' type='chat' id='m2'><body>blocked-2</body></message>" % b.full)
            err = await a.wait_for(lambda el: el.get("id") == "m2", what="message error")
            etype, cond, extra = error_condition(err)
            assert (etype, cond) == ("cancel", "not-acceptable")
            assert extra == [q(NS_BLOCKING_ERRORS, "blocked")]

            r = await a.iq("set", "<unblock xmlns='urn:xmpp:blocking'>%s</unblock>" % block_item(b.bare))
            assert r.get("type") == "result", describe(r)
            await a.wait_for(is_push("unblock"), what="unblock push")
            b.send("<message to='%s' type='chat'><body>after-unblock-1</body></message>" % a.full)
            a.send("<message to='%s' type='chat'><body>after-unblock-2</body></message>" % b.full)
            await a.message("after-unblock-1")
            await b.message("after-unblock-2")
            # The blocked message never arrived.
            assert not [e for e in a.others if "blocked-1" in describe(e)]
        finally:
            await close_all(a, b)
    run(go())


def test_blocklist_changes_are_pushed_to_every_resource_that_asked(stack, new_user):
    alice = new_user("bpa")
    target = "spam%s@%s" % (secrets.token_hex(3), stack.domain)

    async def go():
        a1 = await Client.login(stack, alice, instance="c2s1")
        a2 = await Client.login(stack, alice, instance="c2s2")
        a3 = await Client.login(stack, alice, instance="c2s1")   # never asks: no pushes
        try:
            for c in (a1, a2):
                r = await c.iq("get", "<blocklist xmlns='urn:xmpp:blocking'/>")
                result_payload(r, NS_BLOCKING, "blocklist")
            r = await a1.iq("set", "<block xmlns='urn:xmpp:blocking'>%s%s</block>"
                                   % (block_item(target), block_item("evil.example")))
            assert r.get("type") == "result", describe(r)
            for c in (a1, a2):
                push = await c.wait_for(is_push("block"), what="block push")
                assert push.get("from") in (None, alice[0]) and push.get("to") == c.full
                jids = {i.get("jid") for i in push.find(q(NS_BLOCKING, "block"))}
                assert jids == {target, "evil.example"}
                c.send("<iq type='result' id='%s'/>" % push.get("id"))
            r = await a3.iq("set", "<unblock xmlns='urn:xmpp:blocking'/>")   # unblock all
            assert r.get("type") == "result", describe(r)
            for c in (a1, a2):
                push = await c.wait_for(is_push("unblock"), what="unblock-all push")
                assert len(push.find(q(NS_BLOCKING, "unblock"))) == 0
            r = await a2.iq("get", "<blocklist xmlns='urn:xmpp:blocking'/>")
            assert len(result_payload(r, NS_BLOCKING, "blocklist")) == 0
            # a3 never asked for the list, so it got no push (checked after a
            # round trip that the pushes precede).
            await a3.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
            assert not [e for e in a3.others if e.find(q(NS_BLOCKING, "block")) is not None
                        or e.find(q(NS_BLOCKING, "unblock")) is not None]
            r = await a1.iq("set", "<block xmlns='urn:xmpp:blocking'><item jid='a@b@c'/></block>")
            assert condition(r) == "jid-malformed"
            r = await a1.iq("set", "<block xmlns='urn:xmpp:blocking'/>")
            assert condition(r) == "bad-request"
        finally:
            await close_all(a1, a2, a3)
    run(go())


def test_blocking_sends_unavailable_to_a_subscribed_contact_and_unblocking_restores(stack, new_user):
    async def go():
        a, b = await logins(stack, new_user("bpra"), new_user("bprb"))

        def presence_from_a(kind):
            def pred(el):
                return (el.tag == q(NS_CLIENT, "presence") and el.get("from") == a.full and
                        el.get("type") == kind)
            return pred
        try:
            b.send("<presence/>")
            await make_contact(b, a)                  # bob receives alice's presence
            await b.wait_for(presence_from_a(None), what="alice's presence after approval")
            r = await a.iq("set", "<block xmlns='urn:xmpp:blocking'>%s</block>" % block_item(b.bare))
            assert r.get("type") == "result", describe(r)
            await b.wait_for(presence_from_a("unavailable"), what="unavailable on block")
            # Alice's later presence does not reach bob while he is blocked.
            a.send("<presence><status>while blocked</status></presence>")
            r = await a.iq("set", "<unblock xmlns='urn:xmpp:blocking'>%s</unblock>"
                                  % block_item(b.bare))
            assert r.get("type") == "result", describe(r)
            el = await b.wait_for(presence_from_a(None), what="presence on unblock")
            assert el.findtext(q(NS_CLIENT, "status")) == "while blocked"
            assert not [e for e in b.others if e.get("from") == a.full and e.get("type") is None]
        finally:
            await close_all(a, b)
    run(go())
