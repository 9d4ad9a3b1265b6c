"""External components (XEP-0114) on sb-s2s's component port: a slixmpp
ComponentXMPP attaches as gw.DOMAIN (the stack's configured component) and
exchanges messages with a user; a wrong secret, an unconfigured domain and
a forged `from` are refused with the stream errors the XEP and RFC 6120
name; a component that is not connected answers service-unavailable; two
connections of one component share its recipients, each message once."""

import asyncio
import hashlib
import re
import secrets

import slixmpp

from xmpptest import close, login, run, wait_until

NS_STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"


def comp_env(stack):
    with open(stack.env["SB_COMPONENT_SECRET_FILE"]) as f:
        secret = f.readline().rstrip("\n")
    return stack.env["SB_COMPONENT_DOMAIN"], secret, int(stack.env["SB_S2S1_COMPONENT_PORT"])


class Component(slixmpp.ComponentXMPP):
    """A component that records what it gets and echoes messages."""

    def __init__(self, domain, secret, port, echo=True):
        super().__init__(domain, secret, "127.0.0.1", port)
        self.got = asyncio.Queue()
        self.ready = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self._started)
        self.add_event_handler("message", self._message)
        self.echo = echo

    def _started(self, _):
        if not self.ready.done():
            self.ready.set_result(True)

    def _message(self, msg):
        self.got.put_nowait(msg)
        if self.echo and msg["type"] != "error":
            self.send_message(mto=msg["from"], mfrom=msg["to"], mbody="echo: " + msg["body"],
                              mtype="chat")


async def attach(stack, echo=True):
    domain, secret, port = comp_env(stack)
    c = Component(domain, secret, port, echo)
    c.connect("127.0.0.1", port)
    await asyncio.wait_for(c.ready, 15)
    return c


async def raw_component(port, to, secret=None, handshake=None):
    """A hand-driven component stream; returns everything the server wrote
    until it closed (or 10 s passed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(("<stream:stream xmlns='jabber:component:accept' "
                  "xmlns:stream='http://etherx.jabber.org/streams' to='%s'>" % to).encode())
    data = b""
    while b">" not in data:
        chunk = await asyncio.wait_for(reader.read(4096), 10)
        if not chunk:
            break
        data += chunk
    m = re.search(rb"id='([^']+)'", data)
    if m and (secret is not None or handshake is not None):
        hs = handshake or hashlib.sha1(m.group(1) + secret.encode()).hexdigest()
        writer.write(("<handshake>%s</handshake>" % hs).encode())
    return reader, writer, data


async def read_until_closed(reader, data=b"", timeout=10):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            chunk = await asyncio.wait_for(reader.read(4096), max(0.1, deadline - loop.time()))
        except asyncio.TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace")


def test_a_slixmpp_component_and_a_user_exchange_messages(stack, new_user):
    jid, pw = new_user("cu")
    domain = stack.env["SB_COMPONENT_DOMAIN"]

    async def go():
        comp = await attach(stack)
        user = await login(stack, jid, pw, instance="c2s2")
        try:
            user.send_message(mto="bot@" + domain, mbody="hello", mtype="chat")
            m = await asyncio.wait_for(comp.got.get(), 15)
            assert m["body"] == "hello"
            assert m["to"].bare == "bot@" + domain
            assert str(m["from"]).startswith(jid + "/"), str(m["from"])   # stamped full JID
            while True:
                r = await asyncio.wait_for(user.inbox.get(), 15)
                if r["body"] == "echo: hello":
                    break
            assert r["from"].bare == "bot@" + domain, str(r["from"])
            # and the component's domain itself is addressable
            user.send_message(mto=domain, mbody="to the domain", mtype="normal")
            m = await asyncio.wait_for(comp.got.get(), 15)
            assert m["body"] == "to the domain" and str(m["to"]) == domain
        finally:
            await close(user)
            comp.disconnect()
    run(go(), timeout=60)


def test_a_wrong_secret_is_not_authorized_and_an_unknown_domain_host_unknown(stack):
    domain, secret, port = comp_env(stack)

    async def go():
        reader, writer, data = await raw_component(port, domain, handshake="0" * 40)
        text = await read_until_closed(reader, data)
        writer.close()
        assert "<not-authorized xmlns='%s'/>" % NS_STREAMS in text, text
        assert "<handshake/>" not in text, text
        reader, writer, data = await raw_component(port, "nope." + stack.domain, secret)
        text = await read_until_closed(reader, data)
        writer.close()
        assert "<host-unknown xmlns='%s'/>" % NS_STREAMS in text, text
    run(go(), timeout=40)


def test_a_forged_from_closes_the_component_stream_with_invalid_from(stack, new_user):
    domain, secret, port = comp_env(stack)
    jid, _ = new_user("cf")

    async def go():
        reader, writer, data = await raw_component(port, domain, secret)
        while b"<handshake/>" not in data:
            chunk = await asyncio.wait_for(reader.read(4096), 10)
            assert chunk, data
            data += chunk
        writer.write(("<message from='%s/x' to='%s'><body>spoof</body></message>"
                      % (jid, jid)).encode())
        text = await read_until_closed(reader, data)
        writer.close()
        assert "<invalid-from xmlns='%s'/>" % NS_STREAMS in text, text
    run(go(), timeout=40)


def test_a_component_that_is_not_connected_answers_service_unavailable(stack, new_user):
    jid, pw = new_user("cn")
    domain = stack.env["SB_COMPONENT_DOMAIN"]

    async def go():
        user = await login(stack, jid, pw)
        errors = asyncio.Queue()
        user.add_event_handler("message_error", errors.put_nowait)
        try:
            # no component attached (each test detaches its own)
            await asyncio.to_thread(wait_until, lambda: domain not in stack.sbctl(
                "status").stdout, 15, "no s2s to hold " + domain)
            user.send_message(mto="bot@" + domain, mbody="anyone?", mtype="chat")
            r = await asyncio.wait_for(errors.get(), 15)
            assert r["error"]["condition"] == "service-unavailable", r
        finally:
            await close(user)
    run(go(), timeout=60)


def test_two_connections_of_one_component_share_its_recipients(stack, new_user):
    jid, pw = new_user("cb")
    domain = stack.env["SB_COMPONENT_DOMAIN"]
    n = 24

    async def go():
        a = await attach(stack, echo=False)
        b = await attach(stack, echo=False)
        user = await login(stack, jid, pw)
        try:
            out = await asyncio.to_thread(stack.sbctl, "status")
            assert domain in out.stdout, out.stdout          # s2s1 announces it
            tag = secrets.token_hex(3)
            for i in range(n):
                user.send_message(mto="u%d@%s" % (i, domain), mbody="%s-%d" % (tag, i),
                                  mtype="chat")
            got = {a: [], b: []}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while len(got[a]) + len(got[b]) < n and loop.time() < deadline:
                for c in (a, b):
                    while not c.got.empty():
                        got[c].append(c.got.get_nowait()["body"])
                await asyncio.sleep(0.05)
            bodies = got[a] + got[b]
            assert sorted(bodies) == sorted("%s-%d" % (tag, i) for i in range(n)), bodies
            assert got[a] and got[b], "one connection took everything: %d / %d" % (
                len(got[a]), len(got[b]))
        finally:
            await close(user)
            a.disconnect()
            b.disconnect()
    run(go(), timeout=60)
