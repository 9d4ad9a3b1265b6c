"""A certificate per domain (common/certs.c): the test profile serves
localhost with the default certificate and tls2.localhost with one of its
own (cert_dir/tls2.localhost.pem, made by stack.sh). Each test checks the
exact certificate a real handshake presents: by SNI on direct TLS (c2s,
HTTPS/WSS, s2s), by the stream's `to` on STARTTLS (c2s, incoming s2s), by
the stream's `from` on outgoing s2s (against a fake peer that asks for a
client certificate); SIGHUP swaps a certificate without dropping anyone and
keeps the old one when the new file is broken; a domain added while running
gets its certificate without a restart."""

import asyncio
import os
import secrets
import shutil
import ssl
import time
import types
import xml.etree.ElementTree as ET

import pytest
from cryptography import x509

from xmpptest import (NS_CLIENT, ROOT, Log, RawStream, close, insecure_tls_context, login,
                      reload_and_wait, run, sighup,
                      wait_until)
from fedtest import OFFSET, CertAuthority, Dns, FedStack, RawS2S, host, srv

NS_STREAM = "http://etherx.jabber.org/streams"


# ------------------------------------------------------------------ helpers
def pem_der(path):
    """DER of the first certificate in a PEM file (chain + key files too)."""
    with open(path) as f:
        text = f.read()
    start = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(text[start:end])


def names(der):
    """The DNS names (SAN, else CN) of a certificate, for messages."""
    c = x509.load_der_x509_certificate(der)
    try:
        return c.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        return [a.value for a in c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]


def peer_der(writer):
    return writer.get_extra_info("ssl_object").getpeercert(binary_form=True)


async def direct_cert(port, sni, addr="127.0.0.1", timeout=10):
    """The certificate a direct TLS handshake with this SNI (None: no SNI) gets."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(addr, port, ssl=insecure_tls_context(),
                                server_hostname=sni or ""), timeout)
    try:
        return peer_der(writer)
    finally:
        writer.close()


def handshake_cert(port, sni, addr="127.0.0.1"):
    return run(direct_cert(port, sni, addr), timeout=20)


def assert_cert(got, want_path, what):
    want = pem_der(want_path)
    assert got == want, "%s: got a certificate for %s, wanted %s's (%s)" % (
        what, names(got), names(want), want_path)


@pytest.fixture(scope="module")
def tls(stack):
    t = types.SimpleNamespace()
    t.domain = stack.env.get("SB_TLS_DOMAIN")
    if not t.domain:
        pytest.fail("the test profile has no SB_TLS_DOMAIN (deploy/dev/stack.sh)")
    t.dir = stack.env["SB_CERT_DIR"]
    t.default = os.path.join(stack.env["SB_VAR"], "tls", "cert.pem")
    t.own = os.path.join(t.dir, t.domain + ".pem")
    t.work = os.path.join(stack.env["SB_VAR"], "tlsdom")
    os.makedirs(t.work, exist_ok=True)
    t.ca = CertAuthority(t.work)
    assert pem_der(t.own) != pem_der(t.default)
    return t


def write_bundle(tls, name, domain, dest):
    """A new self-signed certificate for domain, chain + key in dest (atomically)."""
    cert, key = tls.ca.issue(name, [domain], self_signed=True)
    tmp = dest + ".tmp"
    with open(tmp, "w") as out:
        for p in (cert, key):
            with open(p) as f:
                out.write(f.read())
    os.replace(tmp, dest)
    return dest


# ------------------------------------------------------------------ c2s
def test_direct_tls_presents_the_certificate_the_sni_names(stack, tls):
    port = stack.tls_port("c2s1")
    assert_cert(handshake_cert(port, tls.domain), tls.own, "SNI %s" % tls.domain)
    assert_cert(handshake_cert(port, stack.domain), tls.default, "SNI %s" % stack.domain)
    # No SNI, or a name without a certificate of its own: the default one.
    assert_cert(handshake_cert(port, None), tls.default, "no SNI")
    assert_cert(handshake_cert(port, "unknown.example"), tls.default, "SNI unknown.example")


def test_starttls_presents_the_certificate_of_the_stream_to(stack, tls):
    async def go(to):
        s = RawStream(stack, to=to)
        await s.connect()
        try:
            s.open_stream()
            await s.features()
            await s.starttls()          # SNI is localhost: the stream's `to` decides
            return peer_der(s.writer)
        finally:
            await s.close()
    assert_cert(run(go(tls.domain)), tls.own, "STARTTLS to=%s" % tls.domain)
    assert_cert(run(go(stack.domain)), tls.default, "STARTTLS to=%s" % stack.domain)


def test_https_and_wss_port_presents_the_certificate_the_sni_names(stack, tls):
    port = int(stack.env["SB_BOSH_TLS_PORT"])
    assert_cert(handshake_cert(port, tls.domain), tls.own, "bosh SNI %s" % tls.domain)
    assert_cert(handshake_cert(port, stack.domain), tls.default, "bosh SNI %s" % stack.domain)


# ------------------------------------------------------------------ s2s, incoming
def s2s_target(stack, sni):
    return types.SimpleNamespace(s2s_addr=stack.env["SB_S2S1_LISTEN"],
                                 s2s_port=int(stack.env["SB_S2S1_PORT"]),
                                 s2s_tls_port=int(stack.env["SB_S2S1_TLS_PORT"]), domain=sni)


def test_incoming_s2s_presents_the_certificate_of_the_stream_to_or_the_sni(stack, tls):
    async def starttls(to):
        # SNI localhost on the STARTTLS handshake: the stream's `to` decides.
        s = RawS2S(s2s_target(stack, stack.domain))
        await s.connect()
        try:
            s.open_stream("peer.example", to=to)
            feats = await s.element()
            assert feats is not None and feats.tag == "{%s}features" % NS_STREAM
            await s.starttls("peer.example")
            return peer_der(s.writer)
        finally:
            await s.close()

    async def direct(sni):
        s = RawS2S(s2s_target(stack, sni), direct_tls=True)
        await s.connect()
        try:
            return peer_der(s.writer)
        finally:
            await s.close()
    assert_cert(run(starttls(tls.domain)), tls.own, "s2s STARTTLS to=%s" % tls.domain)
    assert_cert(run(starttls(stack.domain)), tls.default, "s2s STARTTLS to=%s" % stack.domain)
    assert_cert(run(direct(tls.domain)), tls.own, "s2s direct TLS SNI %s" % tls.domain)
    assert_cert(run(direct(stack.domain)), tls.default, "s2s direct TLS SNI %s" % stack.domain)


# ------------------------------------------------------------------ SIGHUP
def test_sighup_swaps_a_certificate_and_keeps_connected_clients(stack, tls):
    jid = "keep%s@%s" % (secrets.token_hex(4), tls.domain)
    pw = secrets.token_urlsafe(10)
    stack.sbctl("user", "add", jid, pw)
    port = stack.tls_port("c2s1")
    saved = os.path.join(tls.work, "saved.pem")
    shutil.copyfile(tls.own, saved)

    async def go():
        s = RawStream(stack, to=tls.domain)
        await s.login(jid, pw)
        try:
            old = peer_der(s.writer)
            assert_cert(old, saved, "before the swap")
            write_bundle(tls, "swap", tls.domain, tls.own)
            log = await asyncio.to_thread(reload_and_wait, stack)
            assert "tls=reloaded" in log.text(), log.text()
            # New handshakes: the new certificate.
            assert_cert(await direct_cert(port, tls.domain), tls.own, "after the swap")
            assert pem_der(tls.own) != old
            # The stream from before goes on as it was.
            s.send("<iq type='get' id='after' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>"
                   % tls.domain)
            iq = await s.expect("{%s}iq" % NS_CLIENT)
            assert iq.get("id") == "after" and iq.get("type") == "result", ET.tostring(iq)
            assert peer_der(s.writer) == old
        finally:
            await s.close()
    try:
        run(go())
    finally:
        os.replace(saved, tls.own)
        reload_and_wait(stack)
    assert_cert(handshake_cert(port, tls.domain), tls.own, "restored")


def test_broken_certificate_on_sighup_keeps_the_old_one_and_logs_once(stack, tls):
    port = stack.tls_port("c2s1")
    saved = os.path.join(tls.work, "saved-broken.pem")
    shutil.copyfile(tls.own, saved)
    try:
        with open(tls.own + ".tmp", "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        os.replace(tls.own + ".tmp", tls.own)
        log = reload_and_wait(stack)
        failed = log.lines("event=tls_cert_failed")
        assert len(failed) == 1, log.text()
        assert "file=%s" % tls.own in failed[0] and "error=" in failed[0], failed[0]
        assert_cert(handshake_cert(port, tls.domain), saved, "after a broken reload")
        assert_cert(handshake_cert(port, stack.domain), tls.default, "others after a broken reload")
    finally:
        os.replace(saved, tls.own)
        reload_and_wait(stack)


def test_domain_section_cert_and_key_come_before_cert_dir(stack, tls):
    # [domain.NAME] cert + key (two files), added to the INI and read on SIGHUP.
    cert, key = tls.ca.issue("section", [tls.domain], self_signed=True)
    with open(stack.ini) as f:
        saved = f.read()
    port = stack.tls_port("c2s1")
    try:
        with open(stack.ini, "a") as f:
            f.write("\n[domain.%s]\ncert = %s\nkey = %s\n" % (tls.domain, cert, key))
        reload_and_wait(stack)
        assert_cert(handshake_cert(port, tls.domain), cert, "[domain.%s] cert" % tls.domain)
    finally:
        with open(stack.ini, "w") as f:
            f.write(saved)
        reload_and_wait(stack)
    assert_cert(handshake_cert(port, tls.domain), tls.own, "cert_dir again")


# ------------------------------------------------------------------ domains added live
def test_domain_added_while_running_gets_its_certificate_from_cert_dir(stack, tls):
    domain = "live%s.localhost" % secrets.token_hex(3)
    pem = write_bundle(tls, "live", domain, os.path.join(tls.dir, domain + ".pem"))
    port = stack.tls_port("c2s1")
    assert_cert(handshake_cert(port, domain), tls.default, "before the domain exists")
    stack.sbctl("domain", "add", domain)
    # Within the domain refresh (a second with live notifications, 30 s
    # without): no SIGHUP, no restart.
    wait_until(lambda: handshake_cert(port, domain) == pem_der(pem), 40,
               "c2s1 to present %s's certificate" % domain, interval=0.5)
    wait_until(lambda: handshake_cert(int(stack.env["SB_BOSH_TLS_PORT"]), domain) == pem_der(pem),
               40, "bosh1 to present %s's certificate" % domain, interval=0.5)


# ------------------------------------------------------------------ s2s, outgoing
PEER = "peer.sbtest"
PEER_ADDR = "127.0.0.9"
PEER_PORT = 25296 + OFFSET


class CertPeer:
    """A fake remote server: offers STARTTLS, asks for a client certificate
    and records (stream from, certificate DER) of each stream."""

    def __init__(self, cert, key, ca):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.load_verify_locations(ca)
        self.ctx.verify_mode = ssl.CERT_OPTIONAL
        self.seen = []
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self.serve, PEER_ADDR, PEER_PORT)

    async def _until(self, reader, parser, pred):
        while True:
            data = await asyncio.wait_for(reader.read(4096), 10)
            if not data:
                raise ConnectionError("closed")
            parser.feed(data)
            for ev, el in parser.read_events():
                if pred(ev, el):
                    return el

    async def serve(self, reader, writer):
        try:
            parser = ET.XMLPullParser(("start", "end"))
            hdr = await self._until(reader, parser, lambda ev, el: ev == "start")
            frm = hdr.get("from")
            writer.write(("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                          "xmlns:stream='%s' id='%s' from='%s' to='%s' version='1.0'>"
                          "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
                          "<required/></starttls></stream:features>"
                          % (NS_STREAM, secrets.token_hex(8), PEER, frm)).encode())
            await self._until(reader, parser,
                              lambda ev, el: ev == "end" and el.tag.endswith("}starttls"))
            writer.write(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            await writer.drain()
            await asyncio.wait_for(writer.start_tls(self.ctx), 10)
            self.seen.append((frm, peer_der(writer)))
        except (OSError, asyncio.TimeoutError, ssl.SSLError, ET.ParseError):
            pass
        finally:
            writer.close()

    async def stop(self):
        if self.server:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture(scope="module")
def fedtls():
    work = os.path.join(ROOT, "var", "fedtls")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    f = types.SimpleNamespace(work=work, ca=CertAuthority(work))
    f.default = f.ca.issue("ta", ["ta.sbtest"])
    f.certdir = os.path.join(work, "domains")
    os.makedirs(f.certdir)
    tb_cert, tb_key = f.ca.issue("tb", ["tb.sbtest"])
    f.own = f.ca.bundle("tb", tb_cert, tb_key)
    shutil.move(f.own, os.path.join(f.certdir, "tb.sbtest.pem"))
    f.own = os.path.join(f.certdir, "tb.sbtest.pem")
    f.peer = f.ca.issue("peer", [PEER])
    f.a = FedStack(2, "ta.sbtest", {
        "SB_STACK_EXTRA_DOMAINS": "tb.sbtest", "SB_S2S_CERT": f.default[0],
        "SB_S2S_KEY": f.default[1], "SB_S2S_CERT_DIR": f.certdir, "SB_S2S_CAFILE": f.ca.ca_cert,
        "SB_S2S_SYSTEM_TRUST": "0", "SB_S2S_CONNECT_TIMEOUT": "4"})
    f.dns = None
    try:
        f.dns = Dns(work, [srv("xmpp-server", PEER, "peer-host.sbtest", PEER_PORT),
                           host("peer-host.sbtest", PEER_ADDR)])
        f.a.start()
        yield f
    finally:
        f.a.stop()
        if f.dns:
            f.dns.stop()


def test_outgoing_s2s_presents_the_certificate_of_the_stream_from(fedtls):
    users = {}
    for d in ("ta.sbtest", "tb.sbtest"):
        jid = "out%s@%s" % (secrets.token_hex(4), d)
        pw = secrets.token_urlsafe(10)
        fedtls.a.sbctl("user", "add", jid, pw)
        users[d] = (jid, pw)
    peer = CertPeer(fedtls.peer[0], fedtls.peer[1], fedtls.ca.ca_cert)

    async def go():
        await peer.start()
        clients = []
        try:
            for d, (jid, pw) in users.items():
                c = await login(fedtls.a, jid, pw)
                clients.append(c)
                c.send_message(mto="someone@" + PEER, mbody="hello", mtype="chat")
            deadline = time.monotonic() + 20
            while {frm for frm, _ in peer.seen} < set(users) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            for c in clients:
                await close(c)
            await peer.stop()
    run(go())
    got = {}
    for frm, der in peer.seen:
        got.setdefault(frm, der)
    assert set(got) >= set(users), "streams seen from %s" % sorted(got)
    assert_cert(got["tb.sbtest"], fedtls.own, "outgoing from tb.sbtest")
    assert_cert(got["ta.sbtest"], fedtls.default[0], "outgoing from ta.sbtest")
