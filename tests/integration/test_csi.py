"""XEP-0352 client state indication on the wire: the feature is offered
after SASL; while a session is inactive, presence and chat-state-only
messages to it are held and coalesced (per sender, last one wins), a
message with a body comes at once (after what was held from the same
contact), and <active/> flushes what was held, in order. Bad input: CSI
before SASL or an unknown element in the namespace is a stream error."""

import secrets

from imclient import MESSAGE, PRESENCE, IMClient, befriend
from xmpptest import NS_CLIENT, RawStream, describe, run, stream_error_condition

NS_CSI = "urn:xmpp:csi:0"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
INACTIVE = "<inactive xmlns='%s'/>" % NS_CSI
ACTIVE = "<active xmlns='%s'/>" % NS_CSI


async def online(stack, jid, pw, instance="c2s1"):
    c = await IMClient(stack, jid, pw, instance).login()
    await c.roster_get()
    c.presence()
    return c


async def close_all(*clients):
    for c in clients:
        if c is not None:
            await c.close()


async def settle(client):
    """Everything the user's sm had to do for `client` before now is done:
    an iq to the own account waits in the same per-user queue, and its
    answer leaves after whatever the sm sent this session before it."""
    iq = await client.iq("get", "<query xmlns='jabber:iq:roster'/>")
    assert iq.get("type") == "result", describe(iq)


def status_of(el):
    return el.findtext("{%s}status" % NS_CLIENT)


def from_is(jid, tag):
    return lambda e: e.tag == tag and e.get("from") == jid


async def friends(stack, new_user, n, instance="c2s1"):
    out = []
    for i in range(n):
        jid, pw = new_user("cf%d" % i)
        out.append(await online(stack, jid, pw, instance))
    return out


def test_csi_feature_is_offered_after_authentication(stack, new_user):
    jid, pw = new_user("cfe")

    async def go():
        c = IMClient(stack, jid, pw, "c2s2")
        await c.login()
        try:
            assert c.features.find("{%s}csi" % NS_CSI) is not None, describe(c.features)
        finally:
            await c.close()
    run(go())


def test_presence_is_held_while_inactive_and_coalesced_on_active(stack, new_user):
    a_jid, a_pw = new_user("cia")

    async def go():
        a = await online(stack, a_jid, a_pw, "c2s1")
        b, c = await friends(stack, new_user, 2, "c2s2")
        try:
            await befriend(a, b)
            await befriend(a, c)
            await settle(a)
            await a.nothing(lambda e: False, 0.3)   # what befriending sent
            a.backlog.clear()
            a.send(INACTIVE)
            await settle(a)          # the csi control is handled before this
            for i in range(3):
                b.presence(status="b%d" % i)
            c.presence(status="c0")
            b.presence(status="b3")
            c.presence(status="c1")
            await settle(b)
            await settle(c)
            # held: a has seen none of them
            await a.nothing(lambda e: e.tag == PRESENCE and e.get("from") in (b.jid, c.jid), 0.5)
            a.send(ACTIVE)
            await settle(a)
            got = [e for e in a.backlog if e.tag == PRESENCE and e.get("from") in (b.jid, c.jid)]
            # one per contact, the last one (b's and c's reach a's sm through
            # their own sms, so the order between the two is not defined)
            assert sorted((e.get("from"), status_of(e)) for e in got) == \
                sorted([(b.jid, "b3"), (c.jid, "c1")]), [describe(e) for e in got]
        finally:
            await close_all(a, b, c)
    run(go())


def test_message_with_body_comes_at_once_and_chat_states_wait(stack, new_user):
    a_jid, a_pw = new_user("cim")

    async def go():
        a = await online(stack, a_jid, a_pw, "c2s2")
        b, c = await friends(stack, new_user, 2, "c2s1")
        try:
            await befriend(a, b)
            await befriend(a, c)
            await settle(a)
            await a.nothing(lambda e: False, 0.3)   # what befriending sent
            a.backlog.clear()
            a.send(INACTIVE)
            await settle(a)
            c.presence(status="c away")
            # presence travels through the sender's sm, messages do not: let
            # b's presence reach a's sm first
            b.presence(status="b busy")
            await settle(b)
            await settle(c)
            await a.nothing(lambda e: e.get("from") in (b.jid, c.jid), 0.5)
            for state in ("composing", "paused"):
                b.send("<message to='%s' type='chat'><%s xmlns='%s'/></message>"
                       % (a.jid, state, NS_CHATSTATES))
            text = "urgent %s" % secrets.token_hex(3)
            b.message(a.jid, text)
            got = await a.message_with(text)
            # b's held stanzas came first (one contact keeps its order),
            # coalesced; c's presence is still held
            before = [e for e in a.backlog if e.get("from") in (b.jid, c.jid)]
            assert [(e.tag, status_of(e)) for e in before if e.tag == PRESENCE] == \
                [(PRESENCE, "b busy")], [describe(e) for e in before]
            states = [x.tag for e in before if e.tag == MESSAGE for x in e]
            assert states == ["{%s}paused" % NS_CHATSTATES], [describe(e) for e in before]
            assert got.get("from") == b.jid
            a.backlog.clear()
            a.send(ACTIVE)
            await settle(a)
            got = [e for e in a.backlog if e.get("from") in (b.jid, c.jid)]
            assert [(e.get("from"), status_of(e)) for e in got] == [(c.jid, "c away")], \
                [describe(e) for e in got]
        finally:
            await close_all(a, b, c)
    run(go())


def test_inactive_before_bind_applies_from_the_binding(stack, new_user):
    a_jid, a_pw = new_user("cib")

    async def go():
        b, = await friends(stack, new_user, 1, "c2s2")
        a = await online(stack, a_jid, a_pw, "c2s1")
        try:
            await befriend(a, b)
            await a.close()
            a = IMClient(stack, a_jid, a_pw, "c2s1")
            s = a.raw
            await s.connect()
            s.open_stream()
            await s.features()
            await s.auth_plain(a_jid, a_pw)
            s.open_stream()
            await s.features()
            s.send(INACTIVE)                    # between SASL and bind: remembered
            a.jid = await s.bind()
            await a.roster_get()
            a.presence()
            await settle(a)
            b.presence(status="while a sleeps")
            await settle(b)
            await a.nothing(from_is(b.jid, PRESENCE), 0.5)
            a.send(ACTIVE)
            got = await a.presence_from(b.jid, exact=True)
            assert status_of(got) == "while a sleeps", describe(got)
        finally:
            await close_all(a, b)
    run(go())


def test_csi_before_sasl_and_unknown_csi_element_are_stream_errors(stack, new_user):
    jid, pw = new_user("cix")

    async def go():
        s = RawStream(stack, instance="c2s1", direct_tls=True)
        await s.connect()
        s.open_stream()
        await s.features()
        s.send(INACTIVE)
        err = await s.element()
        assert stream_error_condition(err) == "unsupported-stanza-type", describe(err)
        await s.close()
        c = await IMClient(stack, jid, pw, "c2s1").login()
        try:
            c.send("<sleepy xmlns='%s'/>" % NS_CSI)
            err = await c.raw.element()
            while err is not None and err.tag != "{http://etherx.jabber.org/streams}error":
                err = await c.raw.element()
            assert stream_error_condition(err) == "unsupported-stanza-type", describe(err)
        finally:
            await c.close()
    run(go())
