"""XEP-0280 message carbons on the wire, with two resources of one user on
DIFFERENT front-ends (c2s1 and c2s2): enable/disable, <received/> and
<sent/> copies, <private/> and the XEP-0334 <no-copy/> hint, a disabled
resource, the errors for bad requests, and the flag surviving the death of
the user's sm (it is kept in Redis with the session)."""

import asyncio
import secrets

from imclient import MESSAGE, IMClient, error_condition, user_on
from xmpptest import NS_CLIENT, close, describe, login, run

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
ENABLE = "<enable xmlns='%s'/>" % NS_CARBONS
DISABLE = "<disable xmlns='%s'/>" % NS_CARBONS


async def online(stack, jid, pw, instance, carbons=True):
    """Logged in and available; with carbons enabled (the iq's answer also
    says the presence before it was handled: same queue)."""
    c = await IMClient(stack, jid, pw, instance).login()
    c.presence()
    iq = await c.iq("set", ENABLE if carbons else DISABLE)
    assert iq.get("type") == "result", describe(iq)
    return c


async def close_all(*clients):
    for c in clients:
        if c is not None:
            await c.close()


def copy_of(el, direction):
    """The forwarded message inside a carbon copy, or None."""
    if el.tag != MESSAGE:
        return None
    return el.find("{%s}%s/{%s}forwarded/{%s}message"
                   % (NS_CARBONS, direction, NS_FORWARD, NS_CLIENT))


async def carbon(client, direction, body, timeout=10):
    el = await client.next(lambda e: (copy_of(e, direction) is not None and
                                      copy_of(e, direction).findtext("{%s}body" % NS_CLIENT)
                                      == body), timeout, "%s carbon of %r" % (direction, body))
    return el, copy_of(el, direction)


def any_carbon(el):
    return copy_of(el, "received") is not None or copy_of(el, "sent") is not None


def inner_of(el):
    return copy_of(el, "received") if copy_of(el, "received") is not None else copy_of(el, "sent")


def body_is(text):
    return lambda inner: inner.findtext("{%s}body" % NS_CLIENT) == text


async def marker(sender, to, clients, forbidden):
    """A plain message every client in `clients` sees (or a copy of it)
    after anything sent before it by the same sender: a carbon whose inner
    message `forbidden` matches must not have come by then."""
    text = "marker %s" % secrets.token_hex(3)
    sender.message(to, text)
    for c in clients:
        await c.next(lambda e: e.tag == MESSAGE and (
            e.findtext("{%s}body" % NS_CLIENT) == text or
            (inner_of(e) is not None and body_is(text)(inner_of(e)))), 10, "marker")
        bad = [e for e in c.backlog if inner_of(e) is not None and forbidden(inner_of(e))]
        assert not bad, [describe(e) for e in bad]


def test_received_copy_reaches_the_resource_on_the_other_front_end(stack, new_user):
    a_jid, a_pw = new_user("cra")
    b_jid, b_pw = new_user("crb")

    async def go():
        a1 = await online(stack, a_jid, a_pw, "c2s1")
        a2 = await online(stack, a_jid, a_pw, "c2s2")
        b = await online(stack, b_jid, b_pw, "c2s1", carbons=False)
        try:
            text = "to a1 %s" % secrets.token_hex(3)
            b.message(a1.jid, text)
            got = await a1.message_with(text)
            assert got.get("from") == b.jid
            el, inner = await carbon(a2, "received", text)
            assert el.get("from") == a_jid and el.get("to") == a2.jid, describe(el)
            assert el.get("type") == "chat"
            assert inner.get("from") == b.jid and inner.get("to") == a1.jid, describe(el)
            # to the bare JID: both have priority 0, both get the original
            # and neither a copy
            text = "to bare %s" % secrets.token_hex(3)
            b.message(a_jid, text)
            await a1.message_with(text)
            await a2.message_with(text)
            await marker(b, a1.jid, [a1, a2], body_is(text))
        finally:
            await close_all(a1, a2, b)
    run(go())


def test_sent_copy_reaches_the_resource_on_the_other_front_end(stack, new_user):
    a_jid, a_pw = new_user("csa")
    b_jid, b_pw = new_user("csb")

    async def go():
        a1 = await online(stack, a_jid, a_pw, "c2s1", carbons=False)
        a2 = await online(stack, a_jid, a_pw, "c2s2")
        b = await online(stack, b_jid, b_pw, "c2s2", carbons=False)
        try:
            # a1's own iq is answered after the sm told c2s1 about a2's
            # carbons (same sm, same socket, in order)
            assert (await a1.iq("set", DISABLE)).get("type") == "result"
            text = "from a1 %s" % secrets.token_hex(3)
            a1.message(b_jid, text)
            got = await b.message_with(text)
            assert got.get("from") == a1.jid, describe(got)
            el, inner = await carbon(a2, "sent", text)
            assert el.get("from") == a_jid and el.get("to") == a2.jid, describe(el)
            assert inner.get("from") == a1.jid and inner.get("to") == b_jid, describe(el)
            # the sender itself gets no copy (it has carbons off here, and
            # with them on it would not either: below)
            assert (await a1.iq("set", ENABLE)).get("type") == "result"
            text = "again %s" % secrets.token_hex(3)
            a1.message(b_jid, text)
            await b.message_with(text)
            await carbon(a2, "sent", text)
            await marker(b, a1.jid, [a1], body_is(text))
            # a normal message without a body (a receipt) is not eligible
            a1.send("<message to='%s'><received xmlns='urn:xmpp:receipts' id='x'/></message>"
                    % b_jid)
            await marker(a1, b_jid, [a2],
                         lambda m: m.find("{urn:xmpp:receipts}received") is not None)
        finally:
            await close_all(a1, a2, b)
    run(go())


def test_private_and_no_copy_are_not_copied(stack, new_user):
    a_jid, a_pw = new_user("cpa")
    b_jid, b_pw = new_user("cpb")

    async def go():
        a1 = await online(stack, a_jid, a_pw, "c2s1")
        a2 = await online(stack, a_jid, a_pw, "c2s2")
        b = await online(stack, b_jid, b_pw, "c2s1", carbons=False)
        try:
            text = "private %s" % secrets.token_hex(3)
            b.send("<message to='%s' type='chat'><body>%s</body><private xmlns='%s'/></message>"
                   % (a1.jid, text, NS_CARBONS))
            got = await a1.message_with(text)
            # XEP-0280 §8: the receiving server removes <private/>
            assert got.find("{%s}private" % NS_CARBONS) is None, describe(got)
            await marker(b, a1.jid, [a2], body_is(text))
            text = "no-copy %s" % secrets.token_hex(3)
            a1.send("<message to='%s' type='chat'><body>%s</body>"
                    "<no-copy xmlns='urn:xmpp:hints'/></message>" % (b_jid, text))
            await b.message_with(text)
            await marker(a1, b_jid, [a2], body_is(text))
            text = "sent private %s" % secrets.token_hex(3)
            a1.send("<message to='%s' type='chat'><body>%s</body><private xmlns='%s'/></message>"
                    % (b_jid, text, NS_CARBONS))
            got = await b.message_with(text)
            assert got.find("{%s}private" % NS_CARBONS) is None, describe(got)
            await marker(a1, b_jid, [a2], body_is(text))
        finally:
            await close_all(a1, a2, b)
    run(go())


def test_disabled_resource_gets_no_copies(stack, new_user):
    a_jid, a_pw = new_user("cda")
    b_jid, b_pw = new_user("cdb")

    async def go():
        a1 = await online(stack, a_jid, a_pw, "c2s1")
        a2 = await online(stack, a_jid, a_pw, "c2s2")
        b = await online(stack, b_jid, b_pw, "c2s1", carbons=False)
        try:
            text = "on %s" % secrets.token_hex(3)
            b.message(a1.jid, text)
            await carbon(a2, "received", text)
            assert (await a2.iq("set", DISABLE)).get("type") == "result"
            assert (await a2.iq("set", DISABLE)).get("type") == "result"     # twice: fine
            text = "off %s" % secrets.token_hex(3)
            b.message(a1.jid, text)
            await a1.message_with(text)
            a1.message(b_jid, "sent while a2 is off")
            await b.message_with("sent while a2 is off")
            # a message straight to a2 comes after anything b's sm and a's
            # sm sent before it: no copy may be waiting
            text = "direct %s" % secrets.token_hex(3)
            b.message(a2.jid, text)
            await a2.message_with(text)
            assert not [e for e in a2.backlog if any_carbon(e)], \
                [describe(e) for e in a2.backlog]
        finally:
            await close_all(a1, a2, b)
    run(go())


def test_bad_requests_get_the_errors_and_enabling_twice_is_fine(stack, new_user):
    a_jid, a_pw = new_user("cba")

    async def go():
        a = await online(stack, a_jid, a_pw, "c2s1")
        try:
            assert (await a.iq("set", ENABLE)).get("type") == "result"     # idempotent
            err = await a.iq("get", ENABLE)
            assert error_condition(err) == "feature-not-implemented", describe(err)
            err = await a.iq("set", "<toggle xmlns='%s'/>" % NS_CARBONS)
            assert error_condition(err) == "bad-request", describe(err)
            info = await a.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>",
                              to=stack.domain)
            feats = {f.get("var") for f in info.iter("{http://jabber.org/protocol/disco#info}feature")}
            assert NS_CARBONS in feats, describe(info)
        finally:
            await a.close()
    run(go())


def test_carbons_survive_the_death_of_the_users_sm(stack):
    a_jid, a_pw = user_on(stack, "sm1")
    b_jid, b_pw = user_on(stack, "sm2")
    stack.wait_instances(present=("sm1", "sm2"))

    async def go():
        a1 = await online(stack, a_jid, a_pw, "c2s1")
        a2 = await online(stack, a_jid, a_pw, "c2s2")
        b = await online(stack, b_jid, b_pw, "c2s1", carbons=False)
        try:
            stack.stack("kill-proc", "sm1")
            await asyncio.to_thread(stack.wait_instances, absent=("sm1",))
            # sm2 now owns a and loads its sessions — carbons flags included
            text = "after %s" % secrets.token_hex(3)
            b.message(a1.jid, text)
            await a1.message_with(text, timeout=15)
            await carbon(a2, "received", text, timeout=15)
            text = "sent after %s" % secrets.token_hex(3)
            a1.message(b_jid, text)
            await b.message_with(text)
            await carbon(a2, "sent", text)
        finally:
            await close_all(a1, a2, b)
    try:
        run(go(), timeout=90)
    finally:
        stack.stack("start-proc", "sm1")
        stack.wait_instances(present=("sm1", "sm2"))


def test_slixmpp_carbons_plugin_sees_copies(stack, new_user):
    """A real client library: slixmpp's XEP-0280 plugin enables carbons and
    raises carbon_received / carbon_sent for the copies."""
    a_jid, a_pw = new_user("csl")
    b_jid, b_pw = new_user("csm")

    async def go():
        xmpp = await login(stack, a_jid, a_pw, instance="c2s2", plugins=("xep_0280",),
                           presence=False)
        got = {"received": asyncio.Queue(), "sent": asyncio.Queue()}
        xmpp.add_event_handler("carbon_received",
                               lambda m: got["received"].put_nowait(m["carbon_received"]["body"]))
        xmpp.add_event_handler("carbon_sent",
                               lambda m: got["sent"].put_nowait(m["carbon_sent"]["body"]))
        a1 = b = None
        try:
            await xmpp.plugin["xep_0280"].enable(timeout=10)
            xmpp.send_presence()
            a1 = await online(stack, a_jid, a_pw, "c2s1", carbons=False)
            b = await online(stack, b_jid, b_pw, "c2s1", carbons=False)
            b.message(a1.jid, "hello a1")
            assert await asyncio.wait_for(got["received"].get(), 10) == "hello a1"
            a1.message(b_jid, "hello b")
            assert await asyncio.wait_for(got["sent"].get(), 10) == "hello b"
        finally:
            await close_all(a1, b)
            await close(xmpp)
    run(go())
