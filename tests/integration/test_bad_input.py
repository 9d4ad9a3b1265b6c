"""Bad input is normal input: each malformed, oversized, too deep or
wrongly namespaced stream gets the exact stream error on a raw socket, the
connection is closed, and the front-end serves the next login."""

import xml.etree.ElementTree as ET

import pytest

from xmpptest import RawStream, run, stream_error_condition, describe

STREAM_NS = "http://etherx.jabber.org/streams"


def header(to="localhost", ns="jabber:client", stream_ns=STREAM_NS, version="1.0",
           name="stream:stream"):
    return ("<?xml version='1.0'?><%s to='%s' xmlns='%s' xmlns:stream='%s' version='%s'>"
            % (name, to, ns, stream_ns, version))


async def next_login_works(stack, jid, password):
    s = RawStream(stack, direct_tls=True)
    try:
        full = await s.login(jid, password)
        assert full.startswith(jid + "/")
    finally:
        await s.close()


async def expect_stream_error(s, cond):
    err = await s.element()
    while err is not None and stream_error_condition(err) is None:
        err = await s.element()           # features, results sent before the error
    assert stream_error_condition(err) == cond, describe(err)
    await s.wait_closed()
    assert s.closed


@pytest.mark.parametrize("hdr,cond", [
    (header(stream_ns="http://example.org/not-streams"), "invalid-namespace"),
    (header(ns="jabber:server"), "invalid-namespace"),
    (header(ns="urn:example:bogus"), "invalid-namespace"),
    (header(name="stream"), "bad-format"),
    (header(version="0.9"), "unsupported-version"),
], ids=["stream-ns", "jabber-server", "bogus-default-ns", "unprefixed-root", "old-version"])
def test_bad_stream_header_gets_exact_error(stack, new_user, hdr, cond):
    jid, password = new_user()

    async def go():
        s = RawStream(stack, direct_tls=True)
        try:
            await s.connect()
            s.parser = ET.XMLPullParser(("start", "end"))
            s.send(hdr)
            await expect_stream_error(s, cond)
        finally:
            await s.close()
        await next_login_works(stack, jid, password)
    run(go())


@pytest.mark.parametrize("bad", [
    "<!-- a comment -->",
    "<?some-pi data?>",
    "<message><body>a<!-- inside --></body></message>",
], ids=["comment", "processing-instruction", "comment-in-stanza"])
def test_restricted_xml_gets_restricted_xml(stack, new_user, bad):
    """RFC 6120 §11.1: no comments, processing instructions or DTDs."""
    jid, password = new_user()

    async def go():
        s = RawStream(stack, direct_tls=True)
        try:
            await s.login(jid, password)
            s.send(bad)
            await expect_stream_error(s, "restricted-xml")
        finally:
            await s.close()
        await next_login_works(stack, jid, password)
    run(go())


def test_dtd_in_prolog_gets_restricted_xml(stack):
    async def go():
        s = RawStream(stack, direct_tls=True)
        try:
            await s.connect()
            s.parser = ET.XMLPullParser(("start", "end"))
            s.send("<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY x 'boom'>]>"
                   + header()[len("<?xml version='1.0'?>"):])
            await expect_stream_error(s, "restricted-xml")
        finally:
            await s.close()
    run(go())


def test_oversized_stanza_gets_policy_violation(stack, new_user):
    jid, password = new_user()

    async def go():
        s = RawStream(stack, direct_tls=True)
        try:
            await s.login(jid, password)
            # max_stanza defaults to 256 KiB: one body of 300 KiB is over it.
            s.send("<message to='%s'><body>%s</body></message>" % (jid, "x" * (300 * 1024)))
            await expect_stream_error(s, "policy-violation")
        finally:
            await s.close()
        await next_login_works(stack, jid, password)
    run(go())


def test_too_deep_stanza_gets_policy_violation(stack, new_user):
    jid, password = new_user()

    async def go():
        s = RawStream(stack, direct_tls=True)
        try:
            await s.login(jid, password)
            depth = 64          # max_depth defaults to 32
            s.send("<message to='%s'>%s%s</message>" % (jid, "<x>" * depth, "</x>" * depth))
            await expect_stream_error(s, "policy-violation")
        finally:
            await s.close()
        await next_login_works(stack, jid, password)
    run(go())


def test_stanza_in_unknown_namespace_gets_unsupported_stanza_type(stack, new_user):
    """RFC 6120 §4.9.3.22: a first-level child the server does not support
    ({urn:example:bogus}message is not a stanza)."""
    jid, password = new_user()

    async def go():
        s = RawStream(stack, direct_tls=True)
        try:
            await s.login(jid, password)
            s.send("<message xmlns='urn:example:bogus' to='%s'><body>hi</body></message>" % jid)
            await expect_stream_error(s, "unsupported-stanza-type")
        finally:
            await s.close()
        await next_login_works(stack, jid, password)
    run(go())


def test_unknown_top_level_element_gets_unsupported_stanza_type(stack, new_user):
    jid, password = new_user()

    async def go():
        s = RawStream(stack, direct_tls=True)
        try:
            await s.login(jid, password)
            s.send("<pubsub xmlns='http://jabber.org/protocol/pubsub'/>")
            await expect_stream_error(s, "unsupported-stanza-type")
        finally:
            await s.close()
        await next_login_works(stack, jid, password)
    run(go())


def test_sasl_in_wrong_namespace_gets_invalid_namespace(stack, new_user):
    jid, password = new_user()

    async def go():
        s = RawStream(stack, direct_tls=True)
        try:
            await s.connect()
            s.open_stream()
            await s.features()
            s.send("<auth xmlns='urn:example:not-sasl' mechanism='PLAIN'>AGEAYg==</auth>")
            await expect_stream_error(s, "invalid-namespace")
        finally:
            await s.close()
        await next_login_works(stack, jid, password)
    run(go())


def test_repeated_bad_passwords_end_with_policy_violation(stack, new_user):
    """sasl_retries (3) failures are answered <failure/>; the next attempt
    closes the stream with policy-violation; the account is not locked."""
    jid, password = new_user()

    async def go():
        s = RawStream(stack, direct_tls=True)
        try:
            await s.connect()
            s.open_stream()
            await s.features()
            for _ in range(3):
                reply = await s.auth_plain(jid, password + "x")
                assert reply is not None and reply.tag.endswith("}failure"), describe(reply)
            node = jid.split("@", 1)[0]
            import base64
            token = base64.b64encode(b"\0" + node.encode() + b"\0wrong").decode()
            s.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>"
                   % token)
            await expect_stream_error(s, "policy-violation")
        finally:
            await s.close()
        await next_login_works(stack, jid, password)
    run(go())
