"""[domain.NAME] passwd_ends_sessions = 1: a password change (XEP-0077
in-band, or `sbctl user passwd`) ends the account's other sessions on
every front-end with the stream error <reset/> (RFC 6120 §4.9.3.16: the
credentials the stream was authenticated with no longer hold). The
session that changed its own password in-band stays. Default 0: nothing
ends."""

import secrets

import pytest

from xmpptest import (Log, RawStream, domains_with_config, reload_and_wait, run,
                      stream_error_condition)

NS_REG = "jabber:iq:register"
NS_CLIENT = "jabber:client"


@pytest.fixture(scope="module")
def dom(stack):
    name = "pwe%s.localhost" % secrets.token_hex(3)
    section = "\n[domain.%s]\npasswd_ends_sessions = 1\n" % name
    with domains_with_config(stack, (name,), section):
        reload_and_wait(stack, "c2s2")        # knows the new domain too
        try:
            yield name
        finally:
            pass
    reload_and_wait(stack, "c2s2")


def new_user(stack, domain):
    node, pw = "p%s" % secrets.token_hex(4), secrets.token_urlsafe(10)
    stack.sbctl("user", "add", "%s@%s" % (node, domain), pw)
    return node, pw


async def session(stack, instance, node, domain, pw):
    s = RawStream(stack, instance=instance, to=domain)
    await s.login("%s@%s" % (node, domain), pw)
    return s


async def change_password(s, node, pw):
    s.send("<iq type='set' id='pw'><query xmlns='%s'><username>%s</username>"
           "<password>%s</password></query></iq>" % (NS_REG, node, pw))
    iq = await s.expect("{%s}iq" % NS_CLIENT)
    return iq.get("type")


async def alive(s):
    """A server ping answered: the stream is still up."""
    s.send("<iq type='get' id='png'><ping xmlns='urn:xmpp:ping'/></iq>")
    iq = await s.expect("{%s}iq" % NS_CLIENT)
    return iq.get("type") == "result"


def test_inband_password_change_resets_other_sessions_cluster_wide(stack, dom):
    node, pw = new_user(stack, dom)

    async def go():
        me = await session(stack, "c2s1", node, dom, pw)
        other1 = await session(stack, "c2s2", node, dom, pw)
        other2 = await session(stack, "c2s1", node, dom, pw)
        got = await change_password(me, node, pw + "x")
        ends = [stream_error_condition(await o.element(timeout=15)) for o in (other1, other2)]
        still = await alive(me)
        for s in (me, other1, other2):
            await s.close()
        return got, ends, still
    got, ends, still = run(go())
    assert got == "result"
    assert ends == ["reset", "reset"]
    assert still


def test_sbctl_passwd_resets_every_session(stack, dom):
    node, pw = new_user(stack, dom)

    async def go():
        a = await session(stack, "c2s1", node, dom, pw)
        b = await session(stack, "c2s2", node, dom, pw)
        out = stack.sbctl("user", "passwd", "%s@%s" % (node, dom), pw + "y").stdout
        ends = [stream_error_condition(await s.element(timeout=15)) for s in (a, b)]
        for s in (a, b):
            await s.close()
        return out, ends
    out, ends = run(go())
    assert ends == ["reset", "reset"]
    assert "2 sessions ended" in out


def test_by_default_a_password_change_ends_nothing(stack):
    node, pw = new_user(stack, stack.domain)
    log = Log(stack, "c2s1")

    async def go():
        me = await session(stack, "c2s1", node, stack.domain, pw)
        other = await session(stack, "c2s2", node, stack.domain, pw)
        got = await change_password(me, node, pw + "z")
        out = stack.sbctl("user", "passwd", "%s@%s" % (node, stack.domain), pw + "w").stdout
        ok = await alive(other) and await alive(me)
        for s in (me, other):
            await s.close()
        return got, out, ok
    got, out, ok = run(go())
    assert got == "result" and ok
    assert "ended" not in out
    assert not log.lines("event=sessions_ended")
