"""Login: SASL mechanisms over STARTTLS and direct TLS, PLAIN never before
TLS, wrong passwords."""

import pytest

from xmpptest import (NS_SASL, RawStream, LoginFailed, close, login, mechanisms, run,
                      stream_error_condition, describe)

MECHS = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize("mech", MECHS)
def test_login_binds_a_server_generated_full_jid(stack, new_user, mech, direct_tls):
    jid, password = new_user()

    async def go():
        xmpp = await login(stack, jid, password, mech=mech, direct_tls=direct_tls)
        try:
            assert xmpp["feature_mechanisms"].mech.name == mech
            assert xmpp.boundjid.bare == jid
            assert xmpp.boundjid.resource, "bound JID has no resource"
        finally:
            await close(xmpp)
    run(go())


def test_plain_is_not_offered_before_tls(stack):
    async def go():
        s = await RawStream(stack).connect()
        try:
            s.open_stream()
            feats = await s.features()
            assert feats.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is not None, \
                "STARTTLS not offered: %s" % describe(feats)
            assert "PLAIN" not in mechanisms(feats)
            # and after STARTTLS it is offered
            feats = await s.starttls()
            assert "PLAIN" in mechanisms(feats)
        finally:
            await s.close()
    run(go())


def test_plain_auth_before_tls_is_refused(stack, new_user):
    jid, password = new_user()

    async def go():
        s = await RawStream(stack).connect()
        try:
            s.open_stream()
            await s.features()
            reply = await s.auth_plain(jid, password)
            assert reply is None or reply.tag != "{%s}success" % NS_SASL, \
                "PLAIN accepted on a clear-text stream"
            # either a SASL failure or a stream error is fine; never success
            if reply is not None and reply.tag == "{%s}failure" % NS_SASL:
                return
            assert reply is None or stream_error_condition(reply) is not None, describe(reply)
        finally:
            await s.close()
    run(go())


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "PLAIN"])
def test_wrong_password_is_not_authorized(stack, new_user, mech):
    jid, _password = new_user()

    async def go():
        with pytest.raises(LoginFailed, match="not-authorized"):
            xmpp = await login(stack, jid, "wrong-" + _password, mech=mech)
            await close(xmpp)
    run(go())


def test_wrong_password_on_the_wire_is_sasl_not_authorized(stack, new_user):
    jid, password = new_user()

    async def go():
        s = await RawStream(stack, direct_tls=True).connect()
        try:
            s.open_stream()
            await s.features()
            reply = await s.auth_plain(jid, password + "x")
            assert reply is not None and reply.tag == "{%s}failure" % NS_SASL, describe(reply)
            assert reply.find("{%s}not-authorized" % NS_SASL) is not None, describe(reply)
        finally:
            await s.close()
    run(go())


def test_unknown_user_is_not_authorized(stack):
    async def go():
        s = await RawStream(stack, direct_tls=True).connect()
        try:
            s.open_stream()
            await s.features()
            reply = await s.auth_plain("nobody-here@" + stack.domain, "whatever")
            assert reply is not None and reply.find("{%s}not-authorized" % NS_SASL) is not None, \
                describe(reply)
        finally:
            await s.close()
    run(go())


async def _server_first(stack, instance, user, mech="SCRAM-SHA-256"):
    """The SCRAM server-first-message for `user`: {'s': salt, 'i': count}."""
    import base64
    s = RawStream(stack, instance=instance, direct_tls=True)
    try:
        await s.connect()
        s.open_stream()
        await s.features()
        first = "n,,n=%s,r=fixednonce0123456789" % user
        s.send("<auth xmlns='%s' mechanism='%s'>%s</auth>"
               % (NS_SASL, mech, base64.b64encode(first.encode()).decode()))
        ch = await s.expect("{%s}challenge" % NS_SASL)
        attrs = dict(kv.split("=", 1) for kv in base64.b64decode(ch.text).decode().split(","))
        return {"s": attrs["s"], "i": int(attrs["i"])}
    finally:
        s.abort()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_unknown_user_gets_the_same_salt_everywhere_and_a_real_iteration_count(stack, new_user,
                                                                               mech):
    """Fake SCRAM credentials come from the cluster's sasl_secret and
    scram_iterations (5000 in the test profile): c2s1, c2s2 and c2s1 after a
    restart show an unknown user one salt, with the count a real user's
    server-first-message carries — nothing tells the two apart."""
    jid, _ = new_user("real")
    real = jid.split("@")[0]
    ghost = "ghost" + real[4:]

    async def firsts(instances):
        return [await _server_first(stack, i, u, mech)
                for i in instances for u in (real, ghost)]

    r1, g1, r2, g2 = run(firsts(("c2s1", "c2s2")), timeout=30)
    assert g1["i"] == r1["i"] == r2["i"] == g2["i"], (r1, g1, r2, g2)
    assert g1["s"] == g2["s"], "fake salt differs between c2s1 and c2s2: %s %s" % (g1, g2)
    assert g1["s"] != r1["s"]
    stack.stack("stop-proc", "c2s1")
    stack.stack("start-proc", "c2s1")
    stack.stack("wait-ready")
    (r3, g3) = run(firsts(("c2s1",)), timeout=30)
    assert g3 == g1, "fake credentials changed with a restart: %s → %s" % (g1, g3)
    assert r3 == r1
