"""`[c2s] channel_binding = 0`: a front-end that offers no SCRAM-*-PLUS
and no XEP-0440 <sasl-channel-binding/>, for clients that fail when -PLUS
is offered on TLS 1.3 (slixmpp 1.8 binds only with tls-unique). Set here
for c2s1 alone (reloaded); c2s2 keeps the default."""

import asyncio
import ssl

import slixmpp

from xmpptest import RawStream, close, mechanisms, reload_and_wait, run


def features_after_tls(stack, instance):
    async def go():
        s = RawStream(stack, instance=instance)
        await s.connect()
        s.open_stream()
        await s.features()
        feats = await s.starttls()
        await s.close()
        return feats
    feats = run(go())
    cb = [e for e in feats.iter() if e.tag == "{urn:xmpp:sasl-cb:0}sasl-channel-binding"]
    return mechanisms(feats), cb


async def stock_slixmpp_login(stack, jid, password, instance):
    """slixmpp as it comes (its own mechanism choice, no test workaround)."""
    xmpp = slixmpp.ClientXMPP(jid, password)
    xmpp.ssl_context.check_hostname = False
    xmpp.ssl_context.verify_mode = ssl.CERT_NONE
    xmpp.use_ipv6 = False
    done = asyncio.get_running_loop().create_future()

    def settle(v):
        if not done.done():
            done.set_result(v)
    xmpp.add_event_handler("session_start", lambda _e: settle("ok"))
    xmpp.add_event_handler("failed_auth", lambda f: settle("failed_auth"))
    xmpp.add_event_handler("failed_all_auth", lambda _e: settle("failed_all_auth"))
    xmpp.add_event_handler("disconnected", lambda _e: settle("disconnected"))
    port = stack.port(instance)
    xmpp.default_port = port
    xmpp.connect(("localhost", port), force_starttls=True)
    try:
        result = await asyncio.wait_for(done, 20)
    except asyncio.TimeoutError:
        result = "timeout"
    await close(xmpp)
    return result


def test_channel_binding_off_offers_no_plus_and_stock_slixmpp_logs_in(stack):
    with open(stack.ini) as f:
        saved = f.read()
    with open(stack.ini, "a") as f:
        f.write("\n[c2s.c2s1]\nchannel_binding = 0\n")
    reload_and_wait(stack, "c2s1")
    try:
        mechs, cb = features_after_tls(stack, "c2s1")
        assert "SCRAM-SHA-256" in mechs and "SCRAM-SHA-1" in mechs, mechs
        assert not [m for m in mechs if m.endswith("-PLUS")], mechs
        assert not cb
        # a client's "y" flag (it could bind, we cannot) is no downgrade now
        jid, pw = stack.add_user("cb0")
        assert run(stock_slixmpp_login(stack, jid, pw, "c2s1")) == "ok"
        # the other front-end keeps the default
        mechs2, cb2 = features_after_tls(stack, "c2s2")
        assert "SCRAM-SHA-256-PLUS" in mechs2 and cb2
    finally:
        with open(stack.ini, "w") as f:
            f.write(saved)
        reload_and_wait(stack, "c2s1")
    mechs, cb = features_after_tls(stack, "c2s1")
    assert "SCRAM-SHA-256-PLUS" in mechs and cb
