"""XEP-0357 push notifications on the wire. The "app server" is a second
account on the local domain, logged in over a raw stream; its full JID is
the registered push service, so the notifications travel the normal
routing (sm → router → its sm → its front-end) and it answers them as a
pubsub service would, with a result or an error.

The test profile sets [sm] push_throttle = 2 (deploy/dev/stack.sh)."""

import asyncio
import secrets

from imclient import IQ, IMClient, error_condition
from test_stream_mgmt import SMClient, sm
from xmpptest import describe, redis_cli, run, wait_until

NS_PUSH = "urn:xmpp:push:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_XDATA = "jabber:x:data"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
THROTTLE = 2


def q(ns, tag):
    return "{%s}%s" % (ns, tag)


def is_push(el):
    return (el.tag == IQ and el.get("type") == "set"
            and el.find("%s/%s" % (q(NS_PUBSUB, "pubsub"), q(NS_PUBSUB, "publish"))) is not None)


def form_fields(x):
    return {f.get("var"): f.findtext(q(NS_XDATA, "value")) for f in x.findall(q(NS_XDATA, "field"))}


def summary(el):
    """The urn:xmpp:push:summary fields of a notification."""
    item = el.find("/".join([q(NS_PUBSUB, "pubsub"), q(NS_PUBSUB, "publish"),
                             q(NS_PUBSUB, "item"), q(NS_PUSH, "notification"),
                             q(NS_XDATA, "x")]))
    assert item is not None, describe(el)
    return form_fields(item)


def enable_xml(jid, node, secret=None):
    form = ""
    if secret is not None:
        form = ("<x xmlns='%s' type='submit'><field var='FORM_TYPE'><value>%s</value></field>"
                "<field var='secret'><value>%s</value></field></x>" % (NS_XDATA, PUBLISH_OPTIONS, secret))
    return "<enable xmlns='%s' jid='%s' node='%s'>%s</enable>" % (NS_PUSH, jid, node, form)


async def enable(client, jid, node, secret=None):
    r = await client.iq("set", enable_xml(jid, node, secret))
    assert r.get("type") == "result", describe(r)


async def gone_offline(stack, bare):
    """The user's sm has ended every session (its Redis bindings are gone):
    what is sent to the user from now on finds nobody online."""
    await asyncio.to_thread(wait_until, lambda: redis_cli(stack, "HLEN", "sess:{%s}" % bare) == "0",
                            15, "%s offline" % bare)


async def notification(app, timeout=10):
    """The next notification the app server gets; answered with a result."""
    el = await app.next(is_push, timeout, "push notification")
    app.send("<iq type='result' id='%s' to='%s'/>" % (el.get("id"), el.get("from")))
    return el


async def logins(stack, *accounts):
    out = []
    for jid, pw in accounts:
        out.append(await IMClient(stack, jid, pw).login())
    return out


def test_push_is_advertised_sent_when_offline_never_when_online_and_throttled(stack, new_user):
    async def go():
        alice, bob, app = await logins(stack, new_user("pa"), new_user("pb"), new_user("papp"))
        node = "n" + secrets.token_hex(4)
        try:
            r = await alice.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=alice.bare)
            feats = {f.get("var") for f in r.iter(q(NS_DISCO_INFO, "feature"))}
            assert NS_PUSH in feats, describe(r)
            await enable(alice, app.jid, node, secret="s3cr3t")
            alice.presence()
            await alice.barrier(alice.bare)                  # available before bob sends
            bob.message(alice.bare, "live")
            await alice.message_with("live")
            await bob.barrier(alice.bare)
            await app.nothing(is_push, wait=1.0)            # online: no notification
            await alice.close()
            await gone_offline(stack, alice.bare)

            bob.message(alice.bare, "one")
            el = await notification(app)
            assert el.get("from") == alice.bare and el.get("to") == app.jid, describe(el)
            assert el.find("%s/%s" % (q(NS_PUBSUB, "pubsub"), q(NS_PUBSUB, "publish"))).get("node") == node
            f = summary(el)
            assert f == {"FORM_TYPE": "urn:xmpp:push:summary", "message-count": "1",
                         "last-message-sender": bob.jid}, f    # no body by default
            opts = el.find("%s/%s/%s" % (q(NS_PUBSUB, "pubsub"), q(NS_PUBSUB, "publish-options"),
                                         q(NS_XDATA, "x")))
            assert opts is not None and form_fields(opts) == {"FORM_TYPE": PUBLISH_OPTIONS,
                                                              "secret": "s3cr3t"}, describe(el)
            await app.nothing(is_push, wait=THROTTLE + 1.0)  # exactly one

            # A burst: the first at once, the rest folded into one at the
            # end of the window with the latest count.
            for body in ("two", "three", "four"):
                bob.message(alice.bare, body)
            first = summary(await notification(app, timeout=5))
            assert first["message-count"] == "2", first
            trailing = summary(await notification(app, timeout=THROTTLE + 5))
            assert trailing["message-count"] == "4", trailing
            await app.nothing(is_push, wait=THROTTLE + 1.0)

            # Back online: the offline messages are flushed and the count
            # starts again.
            again = await IMClient(stack, alice.bare, alice.password).login()
            again.presence()
            for body in ("one", "two", "three", "four"):
                await again.message_with(body)
            await again.close()
            await gone_offline(stack, alice.bare)
            bob.message(alice.bare, "five")
            f = summary(await notification(app, timeout=THROTTLE + 5))
            assert f["message-count"] == "1", f
        finally:
            for c in (alice, bob, app):
                await c.close()
    run(go(), timeout=90)


def test_disable_stops_notifications_and_bad_input_is_refused(stack, new_user):
    async def go():
        alice, bob, app = await logins(stack, new_user("pd"), new_user("pe"), new_user("papp"))
        node = "n" + secrets.token_hex(4)
        try:
            # Bad input: the XEP's attributes are checked, nothing is stored.
            r = await alice.iq("set", "<enable xmlns='%s' node='x'/>" % NS_PUSH)
            assert error_condition(r) == "bad-request", describe(r)
            r = await alice.iq("set", "<enable xmlns='%s' jid='%s'/>" % (NS_PUSH, app.jid))
            assert error_condition(r) == "bad-request", describe(r)
            r = await alice.iq("set", "<enable xmlns='%s' jid='%s' node='x'><x xmlns='%s'>"
                               "<field var='FORM_TYPE'><value>urn:other</value></field></x>"
                               "</enable>" % (NS_PUSH, app.jid, NS_XDATA))
            assert error_condition(r) == "bad-request", describe(r)
            r = await alice.iq("set", "<disable xmlns='%s'/>" % NS_PUSH)
            assert error_condition(r) == "bad-request", describe(r)
            r = await bob.iq("set", enable_xml(app.jid, node), to=alice.bare)
            assert error_condition(r) == "forbidden", describe(r)
            # Disabling what was never enabled: a result (idempotent).
            r = await alice.iq("set", "<disable xmlns='%s' jid='nobody.example'/>" % NS_PUSH)
            assert r.get("type") == "result", describe(r)

            await enable(alice, app.jid, node)
            await enable(alice, app.jid, node)               # the same pair again: still one
            r = await alice.iq("set", "<disable xmlns='%s' jid='%s'/>" % (NS_PUSH, app.jid))
            assert r.get("type") == "result", describe(r)
            await alice.close()
            await gone_offline(stack, alice.bare)
            bob.message(alice.bare, "after-disable")
            await bob.barrier(alice.bare)
            await app.nothing(is_push, wait=1.5)
        finally:
            for c in (alice, bob, app):
                await c.close()
    run(go(), timeout=60)


def test_an_error_reply_from_the_app_server_disables_the_registration(stack, new_user):
    async def go():
        alice, bob, app = await logins(stack, new_user("pf"), new_user("pg"), new_user("papp"))
        try:
            await enable(alice, app.jid, "n1")
            await alice.close()
            await gone_offline(stack, alice.bare)
            bob.message(alice.bare, "m1")
            el = await app.next(is_push, 10, "push notification")
            app.send("<iq type='error' id='%s' to='%s'><error type='cancel'><item-not-found "
                     "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
                     % (el.get("id"), el.get("from")))
            await app.barrier(alice.bare)                    # the error was handled
            bob.message(alice.bare, "m2")
            await bob.barrier(alice.bare)
            # neither at once nor at the end of the throttle window
            await app.nothing(is_push, wait=THROTTLE + 1.5)
        finally:
            for c in (alice, bob, app):
                await c.close()
    run(go(), timeout=60)


def test_a_detached_resumable_session_gets_a_notification(stack, new_user):
    """alice's only session is stream-managed and its TCP connection drops
    without </stream>: the sm keeps it detached and queues what comes; the
    first message queued so wakes the app server."""
    async def go():
        (a_jid, a_pw), (b_jid, b_pw), (p_jid, p_pw) = new_user("ph"), new_user("pi"), new_user("papp")
        alice = await SMClient(stack, a_jid, a_pw).login()
        bob, app = await logins(stack, (b_jid, b_pw), (p_jid, p_pw))
        again = SMClient(stack, a_jid, a_pw)
        try:
            await alice.enable()
            await enable(alice, app.jid, "n1")
            alice.presence()
            await alice.barrier(alice.bare)                  # available before bob sends
            bob.message(alice.bare, "live")
            await alice.message_with("live")
            await bob.barrier(alice.bare)
            await app.nothing(is_push, wait=1.0)
            h = alice.h
            alice.abort()                                    # no </stream>: detached
            # The sm learns of the broken stream asynchronously; messages
            # sent before that are queued without a notification.
            el, sent = None, 0
            for i in range(20):
                bob.message(alice.bare, "queued%d" % i)
                sent += 1
                try:
                    el = await app.next(is_push, 0.5, "push notification")
                    break
                except AssertionError:
                    continue
            assert el is not None, "no notification for a detached session"
            app.send("<iq type='result' id='%s' to='%s'/>" % (el.get("id"), el.get("from")))
            f = summary(el)
            assert f["last-message-sender"] == bob.jid and 1 <= int(f["message-count"]) <= sent, f
            # The session is still there to resume, with what was queued.
            r = await again.resume(alice.sm_id, h)
            assert r.tag == sm("resumed"), describe(r)
            await again.message_with("queued%d" % (sent - 1))
        finally:
            for c in (bob, app, again):
                await c.close()
            alice.abort()
    run(go(), timeout=90)


def test_user_del_removes_the_registrations(stack, new_user):
    async def go():
        (a_jid, a_pw) = new_user("pj")
        alice, bob, app = await logins(stack, (a_jid, a_pw), new_user("pk"), new_user("papp"))
        try:
            await enable(alice, app.jid, "n1")
            await alice.close()
            await gone_offline(stack, a_jid)
            stack.sbctl("user", "del", a_jid)
            stack.sbctl("user", "add", a_jid, a_pw)          # the same JID, a new account
            bob.message(a_jid, "to-the-new-account")
            await bob.barrier(a_jid)
            await app.nothing(is_push, wait=1.5)
        finally:
            for c in (alice, bob, app):
                await c.close()
    run(go(), timeout=60)
