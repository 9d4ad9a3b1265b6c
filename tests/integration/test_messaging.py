"""Delivery between users on different front-ends, iq errors, session end,
and what the server itself answers (disco#info, ping)."""

import asyncio
import secrets
import time

import pytest

from xmpptest import RawStream, close, iq_error_condition, login, next_message, run, NS_CLIENT


def test_users_on_different_c2s_exchange_messages_both_ways(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        alice = await login(stack, a_jid, a_pw, instance="c2s1")
        bob = await login(stack, b_jid, b_pw, instance="c2s2", direct_tls=True)
        try:
            for i in range(3):
                text = "hello bob %d %s" % (i, secrets.token_hex(4))
                alice.send_message(mto=bob.boundjid.full, mbody=text, mtype="chat")
                msg = await next_message(bob, body=text)
                assert msg["from"] == alice.boundjid.full

                text = "hi alice %d %s" % (i, secrets.token_hex(4))
                bob.send_message(mto=alice.boundjid.full, mbody=text, mtype="chat")
                msg = await next_message(alice, body=text)
                assert msg["from"] == bob.boundjid.full
        finally:
            await close(alice)
            await close(bob)
    run(go())


def test_from_is_stamped_by_the_server(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        alice = await login(stack, a_jid, a_pw, instance="c2s1")
        bob = await login(stack, b_jid, b_pw, instance="c2s2")
        try:
            msg = alice.make_message(mto=bob.boundjid.full, mbody="spoof", mtype="chat")
            msg["from"] = "mallory@%s/evil" % stack.domain
            msg.send()
            got = await next_message(bob, body="spoof")
            assert got["from"] == alice.boundjid.full
        finally:
            await close(alice)
            await close(bob)
    run(go())


def test_iq_to_unknown_full_jid_is_service_unavailable(stack, two_users):
    (a_jid, a_pw), (b_jid, _b_pw) = two_users

    async def go():
        alice = await login(stack, a_jid, a_pw)
        try:
            cond = await iq_error_condition(alice, b_jid + "/no-such-resource")
            assert cond == "service-unavailable"
        finally:
            await close(alice)
    run(go())


async def _raw_session_then(stack, bob, a_jid, a_pw, end):
    """Log alice in over a raw stream, show that an iq from bob reaches her,
    end her session with `end`, then expect service-unavailable for her old
    full JID (polled: the cluster learns of the end asynchronously)."""
    alice = RawStream(stack, instance="c2s1", direct_tls=True)
    full = await alice.login(a_jid, a_pw)
    try:
        iq = bob.make_iq_get(queryxmlns="urn:xmpp:ping", ito=full)
        pending = asyncio.ensure_future(iq.send(timeout=10))
        got = await alice.expect("{%s}iq" % NS_CLIENT)
        assert got.get("from") == bob.boundjid.full
        alice.send("<iq type='result' id='%s' to='%s'/>" % (got.get("id"), bob.boundjid.full))
        await asyncio.wait_for(pending, 10)
        await end(alice)
    finally:
        await alice.close()

    deadline = time.monotonic() + 15
    last = None
    while time.monotonic() < deadline:
        last = await iq_error_condition(bob, full, timeout=2)
        if last == "service-unavailable":
            return
        await asyncio.sleep(0.2)
    raise AssertionError("iq to the ended session %s: last answer %r, not service-unavailable"
                         % (full, last))


async def _clean_close(alice):
    alice.send("</stream:stream>")
    await alice.wait_closed(timeout=10)
    assert alice.closed, "server did not close the stream after </stream:stream>"


async def _abrupt_close(alice):
    alice.abort()


@pytest.mark.parametrize("end", [_clean_close, _abrupt_close], ids=["clean-close", "tcp-drop"])
def test_closed_session_no_longer_receives(stack, two_users, end):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        bob = await login(stack, b_jid, b_pw, instance="c2s2")
        try:
            await _raw_session_then(stack, bob, a_jid, a_pw, end)
        finally:
            await close(bob)
    run(go())


def test_server_answers_disco_info(stack, new_user):
    jid, pw = new_user()

    async def go():
        xmpp = await login(stack, jid, pw, plugins=["xep_0030"])
        try:
            info = await xmpp["xep_0030"].get_info(jid=stack.domain, timeout=10)
            q = info["disco_info"]
            assert "http://jabber.org/protocol/disco#info" in q["features"]
            assert any(ident[0] == "server" for ident in q["identities"]), q["identities"]
        finally:
            await close(xmpp)
    run(go())


def test_server_answers_ping(stack, new_user):
    jid, pw = new_user()

    async def go():
        xmpp = await login(stack, jid, pw)
        try:
            assert await iq_error_condition(xmpp, stack.domain) is None
        finally:
            await close(xmpp)
    run(go())


def test_message_to_bare_jid_reaches_the_available_session(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        alice = await login(stack, a_jid, a_pw, instance="c2s1")
        bob = await login(stack, b_jid, b_pw, instance="c2s2")   # sends initial presence
        try:
            # bob's presence is processed asynchronously: retry until delivered
            text = "to your bare JID %s" % secrets.token_hex(4)
            deadline = time.monotonic() + 10
            while True:
                alice.send_message(mto=b_jid, mbody=text, mtype="chat")
                try:
                    msg = await next_message(bob, body=text, timeout=1)
                    break
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise
            assert msg["from"] == alice.boundjid.full
            assert msg["to"].bare == b_jid
        finally:
            await close(alice)
            await close(bob)
    run(go())


def test_legacy_session_iq_and_roster_get_are_answered(stack, new_user):
    jid, pw = new_user()

    async def go():
        s = RawStream(stack, direct_tls=True)
        try:
            await s.login(jid, pw)
            s.send("<iq type='set' id='sess1'>"
                   "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
            iq = await s.expect("{%s}iq" % NS_CLIENT)
            assert iq.get("id") == "sess1" and iq.get("type") == "result"
            s.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
            iq = await s.expect("{%s}iq" % NS_CLIENT)
            assert iq.get("id") == "r1" and iq.get("type") == "result"
            assert iq.find("{jabber:iq:roster}query") is not None
        finally:
            await s.close()
    run(go())
