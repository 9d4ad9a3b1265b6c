"""SCRAM-SHA-256-PLUS / SCRAM-SHA-1-PLUS with channel binding (RFC 5802,
RFC 9266 tls-exporter, RFC 5929 tls-server-end-point), advertised with
XEP-0440. slixmpp only knows tls-unique and Python's ssl module has no
exporter, so this is a small SCRAM client of its own over pyOpenSSL
(python3-openssl: export_keying_material, the server's certificate)."""

import base64
import hashlib
import hmac
import secrets
import socket
import struct
import time
import xml.etree.ElementTree as ET

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_CB = "urn:xmpp:sasl-cb:0"


class SyncStream:
    """A blocking client stream (bounded by socket timeouts): STARTTLS or
    direct TLS through pyOpenSSL, then top-level elements."""

    def __init__(self, stack, direct_tls=False, tls12=False, timeout=10):
        self.stack = stack
        self.deadline = time.monotonic() + timeout
        port = stack.tls_port() if direct_tls else stack.port()
        self.sock = socket.create_connection((stack.host, port), timeout=timeout)
        # pyOpenSSL wants a blocking socket; the receive timeout bounds it
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                             struct.pack("ll", int(timeout), 0))
        self.conn = None
        self.tls12 = tls12
        if direct_tls:
            self._tls()
        self.open()
        self.features = self.expect("{%s}features" % NS_STREAM)
        if not direct_tls:
            self.send("<starttls xmlns='%s'/>" % NS_TLS)
            self.expect("{%s}proceed" % NS_TLS)
            self._tls()
            self.open()
            self.features = self.expect("{%s}features" % NS_STREAM)

    def _tls(self):
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_verify(SSL.VERIFY_NONE, lambda *a: True)
        if self.tls12:
            ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
        self.conn = SSL.Connection(ctx, self.sock)
        self.conn.set_tlsext_host_name(self.stack.domain.encode())
        self.conn.set_connect_state()
        self.conn.do_handshake()

    def open(self):
        self.parser = ET.XMLPullParser(("start", "end"))
        self.root, self.pending = None, []
        self.send("<stream:stream to='%s' xmlns='jabber:client' "
                  "xmlns:stream='%s' version='1.0'>" % (self.stack.domain, NS_STREAM))

    def send(self, data):
        data = data.encode()
        if self.conn:
            self.conn.sendall(data)
        else:
            self.sock.sendall(data)

    def element(self):
        while not self.pending:
            if time.monotonic() > self.deadline:
                raise AssertionError("no element in time")
            try:
                data = self.conn.recv(65536) if self.conn else self.sock.recv(65536)
            except (SSL.ZeroReturnError, SSL.SysCallError, ConnectionError):
                data = b""
            except (SSL.WantReadError, BlockingIOError):
                raise AssertionError("no element within the receive timeout")
            if not data:
                return None
            self.parser.feed(data)
            for ev, el in self.parser.read_events():
                if ev == "start" and self.root is None:
                    self.root = el
                elif ev == "end" and self.root is not None and el in list(self.root):
                    self.pending.append(el)
                    self.root.remove(el)
        return self.pending.pop(0)

    def expect(self, tag):
        el = self.element()
        assert el is not None and el.tag == tag, "expected %s, got %s" % (
            tag, None if el is None else ET.tostring(el)[:300])
        return el

    def mechanisms(self):
        return [m.text for m in self.features.iter("{%s}mechanism" % NS_SASL)]

    def cb_types(self):
        return [c.get("type") for c in self.features.iter("{%s}channel-binding" % NS_CB)]

    def exporter(self):
        return self.conn.export_keying_material(b"EXPORTER-Channel-Binding", 32)

    def server_end_point(self):
        der = self.conn.get_peer_certificate().to_cryptography()
        h = der.signature_hash_algorithm
        algo = hashes.SHA256() if h is None or h.name in ("md5", "sha1") else h
        digest = hashes.Hash(algo)
        digest.update(der.public_bytes(Encoding.DER))
        return digest.finalize()

    def close(self):
        try:
            self.send("</stream:stream>")
        except Exception:
            pass
        self.sock.close()


def b64(data):
    return base64.b64encode(data).decode()


def scram(s, user, password, mech, gs2, cbdata=b"", tamper=False):
    """One SCRAM exchange; returns the final <success/> or <failure/>."""
    h = "sha256" if "256" in mech else "sha1"
    cnonce = secrets.token_urlsafe(18)
    bare = "n=%s,r=%s" % (user, cnonce)
    s.send("<auth xmlns='%s' mechanism='%s'>%s</auth>" % (NS_SASL, mech, b64((gs2 + bare).encode())))
    ch = s.element()
    if ch is None or ch.tag != "{%s}challenge" % NS_SASL:
        return ch
    first = base64.b64decode(ch.text).decode()
    attrs = dict(kv.split("=", 1) for kv in first.split(","))
    salted = hashlib.pbkdf2_hmac(h, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    ckey = hmac.new(salted, b"Client Key", h).digest()
    stored = hashlib.new(h, ckey).digest()
    if tamper:
        cbdata = bytes([cbdata[0] ^ 1]) + cbdata[1:]
    final = "c=%s,r=%s" % (b64(gs2.encode() + cbdata), attrs["r"])
    msg = ",".join((bare, first, final)).encode()
    proof = bytes(a ^ b for a, b in zip(ckey, hmac.new(stored, msg, h).digest()))
    s.send("<response xmlns='%s'>%s</response>" % (NS_SASL, b64((final + ",p=" + b64(proof)).encode())))
    return s.element()


def is_(el, name):
    return el is not None and el.tag == "{%s}%s" % (NS_SASL, name)


def failure(el):
    assert is_(el, "failure"), None if el is None else ET.tostring(el)
    return [c.tag.split("}", 1)[1] for c in el][0]


def user(stack):
    jid, pw = stack.add_user("cb")
    return jid.split("@")[0], pw


# ------------------------------------------------------------------ tests
def test_plus_mechanisms_and_xep_0440_types_are_advertised_on_tls(stack):
    for direct in (False, True):
        s = SyncStream(stack, direct_tls=direct)
        m = s.mechanisms()
        assert m[:2] == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"], m
        assert "SCRAM-SHA-256" in m and "SCRAM-SHA-1" in m, m
        assert s.cb_types() == ["tls-exporter", "tls-server-end-point"], s.cb_types()
        s.close()
    # TLS 1.2: no tls-exporter (RFC 9266 is for TLS 1.3), end-point stays
    s = SyncStream(stack, tls12=True)
    assert s.cb_types() == ["tls-server-end-point"], s.cb_types()
    s.close()


def test_scram_plus_with_tls_exporter_and_server_end_point_succeeds(stack):
    node, pw = user(stack)
    for mech in ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"):
        for direct in (False, True):
            s = SyncStream(stack, direct_tls=direct)
            assert is_(scram(s, node, pw, mech, "p=tls-exporter,,", s.exporter()), "success")
            s.close()
            s = SyncStream(stack, direct_tls=direct)
            el = scram(s, node, pw, mech, "p=tls-server-end-point,,", s.server_end_point())
            assert is_(el, "success"), ET.tostring(el)
            s.close()
    # the plain mechanisms keep working on the same streams
    s = SyncStream(stack)
    assert is_(scram(s, node, pw, "SCRAM-SHA-256", "n,,"), "success")
    s.close()


def test_a_wrong_channel_binding_is_not_authorized(stack):
    node, pw = user(stack)
    other = SyncStream(stack)
    cases = [
        # (mechanism, gs2 header, binding data from the stream, expected condition)
        ("SCRAM-SHA-256-PLUS", "p=tls-exporter,,", lambda s: s.exporter(), "not-authorized",
         True),
        # another connection's exporter: what a man in the middle would have
        ("SCRAM-SHA-256-PLUS", "p=tls-exporter,,", lambda s: other.exporter(),
         "not-authorized", False),
        ("SCRAM-SHA-1-PLUS", "p=tls-server-end-point,,", lambda s: s.server_end_point(),
         "not-authorized", True),
        # a type we do not offer (tls-unique is not defined for TLS 1.3)
        ("SCRAM-SHA-256-PLUS", "p=tls-unique,,", lambda s: b"x" * 12, "not-authorized", False),
        # PLUS without a binding, and a binding with a plain mechanism
        ("SCRAM-SHA-256-PLUS", "n,,", lambda s: b"", "malformed-request", False),
        ("SCRAM-SHA-256", "p=tls-exporter,,", lambda s: s.exporter(), "malformed-request",
         False),
    ]
    for mech, gs2, data, cond, tamper in cases:
        s = SyncStream(stack)
        assert failure(scram(s, node, pw, mech, gs2, data(s), tamper=tamper)) == cond, \
            (mech, gs2, tamper)
        s.close()
    other.close()


def test_y_flag_after_plus_was_offered_is_a_downgrade(stack):
    node, pw = user(stack)
    s = SyncStream(stack)
    assert "SCRAM-SHA-256-PLUS" in s.mechanisms()
    assert failure(scram(s, node, pw, "SCRAM-SHA-256", "y,,")) == "not-authorized"
    # with the right password and "n": fine
    assert is_(scram(s, node, pw, "SCRAM-SHA-256", "n,,"), "success")
    s.close()
