"""Raw web clients for the integration tests of sb-bosh: BOSH over plain
http.client (one connection per request, so held requests can overlap in
threads) and a minimal RFC 6455 client on asyncio streams, so the tests see
exactly what goes over the wire (rids, terminate conditions, frames).

Every wait has a deadline."""

import asyncio
import base64
import hashlib
import http.client
import json
import os
import random
import ssl
import struct
import time
import xml.etree.ElementTree as ET

NS_BOSH = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"


def web_port(stack, tls=False):
    return int(stack.env["SB_BOSH_TLS_PORT" if tls else "SB_BOSH_PORT"])


def anon_domain(stack):
    return stack.env.get("SB_ANON_DOMAIN", "anon." + stack.domain)


def _ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def http_request(stack, method, path, body=None, headers=None, tls=False, timeout=20):
    """(status, headers dict lower-cased, body text) on a fresh connection."""
    port = web_port(stack, tls)
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=_ctx())
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read().decode()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


class Bosh:
    """One BOSH session, driven request by request."""

    def __init__(self, stack, tls=False, path="/http-bind"):
        self.stack = stack
        self.tls = tls
        self.path = path
        self.rid = random.randint(10**6, 10**9)
        self.sid = None
        self.jid = None
        self.pending = []          # payload elements received, not yet taken
        self.last = None           # last response text

    def body(self, payload="", rid=None, **attrs):
        a = {"xmlns": NS_BOSH, "rid": str(self.rid if rid is None else rid)}
        if self.sid:
            a["sid"] = self.sid
        a.update({k.replace("__", ":").replace("_", "-") if k.startswith("xmpp__") else k: v
                  for k, v in attrs.items()})
        attr = " ".join("%s='%s'" % (k, v) for k, v in a.items())
        if any(k.startswith("xmpp:") for k in a):
            attr += " xmlns:xmpp='%s'" % NS_XBOSH
        return "<body %s>%s</body>" % (attr, payload)

    def post_raw(self, text, timeout=20):
        st, hdr, data = http_request(self.stack, "POST", self.path, text,
                                     {"Content-Type": "text/xml; charset=utf-8"}, self.tls, timeout)
        assert st == 200, (st, data)
        self.last = data
        return ET.fromstring(data)

    def post(self, payload="", rid=None, timeout=20, **attrs):
        """Send with the next rid (or the one given); returns the <body/>."""
        use = self.rid if rid is None else rid
        if rid is None:
            self.rid += 1
        root = self.post_raw(self.body(payload, use, **attrs), timeout)
        self.pending.extend(list(root))
        return root

    async def apost(self, payload="", **kw):
        return await asyncio.to_thread(self.post, payload, **kw)

    def create(self, to, wait=2, hold=1, **attrs):
        self.sid = None
        root = self.post(to=to, wait=str(wait), hold=str(hold), xmpp__version="1.0", **attrs)
        self.sid = root.get("sid")
        return root

    def take(self, tag, timeout=10):
        """The first received element with this {ns}tag, polling as needed."""
        end = time.monotonic() + timeout
        while True:
            for i, el in enumerate(self.pending):
                if el.tag == tag:
                    return self.pending.pop(i)
            if time.monotonic() > end:
                raise AssertionError("no %s within %ss (last: %s)" % (tag, timeout, self.last))
            root = self.post()
            if root.get("type") == "terminate":
                raise AssertionError("session terminated: %s" % self.last)

    async def atake(self, tag, timeout=10):
        return await asyncio.to_thread(self.take, tag, timeout)

    def login_anonymous(self, domain):
        self.create(domain)
        self.post("<auth xmlns='%s' mechanism='ANONYMOUS'/>" % NS_SASL)
        self.take("{%s}success" % NS_SASL)
        self.post(to=domain, xmpp__restart="true")
        self.take("{%s}features" % NS_STREAM)
        return self.bind()

    def bind(self):
        self.post("<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='%s'/></iq>" % NS_BIND)
        iq = self.take("{%s}iq" % NS_CLIENT)
        self.jid = iq.find("{%s}bind/{%s}jid" % (NS_BIND, NS_BIND)).text
        return self.jid


def prebind(stack, jid, secret=None, tls=False):
    """POST /http-pre-bind → (status, parsed JSON)."""
    secret = stack.env.get("SB_PREBIND_SECRET", "") if secret is None else secret
    st, _h, data = http_request(stack, "POST", "/http-pre-bind", "jid=" + jid,
                                {"Authorization": "Bearer " + secret,
                                 "Content-Type": "application/x-www-form-urlencoded"}, tls)
    return st, json.loads(data)


# ------------------------------------------------------------------ WebSocket
class WsClosed(Exception):
    pass


class WebSocket:
    """Client side of RFC 6455: masked frames out, frames in as they come."""

    def __init__(self, stack, tls=False, path="/xmpp-websocket"):
        self.stack, self.tls, self.path = stack, tls, path
        self.reader = self.writer = None
        self.status = None
        self.headers = {}
        self.auto_pong = True
        self.pings = 0
        self.jid = None

    async def connect(self, protocol="xmpp", origin=None, timeout=10):
        port = web_port(self.stack, self.tls)
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=_ctx() if self.tls else None), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               % (self.path, port, key))
        if protocol:
            req += "Sec-WebSocket-Protocol: %s\r\n" % protocol
        if origin:
            req += "Origin: %s\r\n" % origin
        self.writer.write((req + "\r\n").encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                self.headers[k.strip().lower()] = v.strip()
        if self.status == 101:
            want = base64.b64encode(hashlib.sha1(
                (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            assert self.headers.get("sec-websocket-accept") == want
        return self.status

    def send_frame(self, opcode, payload, fin=True):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + masked)

    def send(self, text):
        self.send_frame(0x1, text.encode())

    async def frame(self, timeout=10):
        """(opcode, payload) of the next frame; WsClosed at EOF."""
        try:
            h = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            n = h[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            assert not (h[1] & 0x80), "server frames must not be masked"
            data = await asyncio.wait_for(self.reader.readexactly(n), timeout)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            raise WsClosed() from e
        return h[0] & 0x0F, data

    async def element(self, timeout=10):
        """The next XMPP element (pings answered with pongs unless auto_pong is off)."""
        end = time.monotonic() + timeout
        while True:
            op, data = await self.frame(max(0.1, end - time.monotonic()))
            if op == 0x9:
                self.pings += 1
                if self.auto_pong:
                    self.send_frame(0xA, data)
                continue
            if op == 0x8:
                raise WsClosed(struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 0)
            if op == 0x1:
                return ET.fromstring(data.decode())

    async def expect(self, tag, timeout=10):
        el = await self.element(timeout)
        assert el.tag == tag, (el.tag, ET.tostring(el))
        return el

    def open(self, to):
        self.send("<open xmlns='%s' to='%s' version='1.0'/>" % (NS_FRAMING, to))

    async def login_anonymous(self, domain):
        self.open(domain)
        await self.expect("{%s}open" % NS_FRAMING)
        feats = await self.expect("{%s}features" % NS_STREAM)
        mechs = [m.text for m in feats.iter("{%s}mechanism" % NS_SASL)]
        assert mechs == ["ANONYMOUS"], mechs
        self.send("<auth xmlns='%s' mechanism='ANONYMOUS'/>" % NS_SASL)
        await self.expect("{%s}success" % NS_SASL)
        self.open(domain)
        await self.expect("{%s}open" % NS_FRAMING)
        await self.expect("{%s}features" % NS_STREAM)
        self.send("<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='%s'/></iq>" % NS_BIND)
        iq = await self.expect("{%s}iq" % NS_CLIENT)
        self.jid = iq.find("{%s}bind/{%s}jid" % (NS_BIND, NS_BIND)).text
        return self.jid

    async def close(self):
        if self.writer:
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 3)
            except (asyncio.TimeoutError, ConnectionError, ssl.SSLError):
                pass
