"""Helpers for the integration tests: where the test stack is, accounts via
sbctl, slixmpp clients that accept the self-signed certificate, a raw XMPP
stream for checking bytes on the wire, and bounded waits.

Every wait here has a deadline; nothing sleeps blindly."""

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import ssl
import subprocess
import time
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.util.sasl.client import MECHANISMS as SASL_MECHANISMS

NS_STREAM = "http://etherx.jabber.org/streams"
NS_STREAMS_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_CLIENT = "jabber:client"

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


# ------------------------------------------------------------------ the stack
class Stack:
    """The running test profile, as described by stack.sh's environment."""

    def __init__(self, env):
        self.env = env
        self.root = env.get("SB_ROOT", ROOT)
        self.ini = env["SB_INI"]
        self.bin = env.get("SB_BIN", os.path.join(self.root, "bin"))
        self.stack_sh = env.get("SB_STACK", os.path.join(self.root, "deploy/dev/stack.sh"))
        self.profile = env.get("SB_STACK_PROFILE", "test")
        self.domain = env.get("SB_DOMAIN", "localhost")
        self.host = "127.0.0.1"
        # instance → (STARTTLS port, direct TLS port)
        self.c2s = {
            "c2s1": (int(env["SB_C2S1_PORT"]), int(env["SB_C2S1_TLS_PORT"])),
            "c2s2": (int(env["SB_C2S2_PORT"]), int(env["SB_C2S2_TLS_PORT"])),
        }

    @classmethod
    def from_environment(cls):
        env = dict(os.environ)
        if "SB_INI" not in env:
            # Run by hand (not through `make test`): ask stack.sh for the test profile.
            out = subprocess.run([os.path.join(ROOT, "deploy/dev/stack.sh"), "-p", "test", "env"],
                                 check=True, capture_output=True, text=True, timeout=10).stdout
            for line in out.splitlines():
                k, _, v = line.partition("=")
                env[k] = v
        return cls(env)

    def port(self, instance="c2s1"):
        return self.c2s[instance][0]

    def tls_port(self, instance="c2s1"):
        return self.c2s[instance][1]

    def sbctl(self, *args, timeout=15, check=True):
        p = subprocess.run([os.path.join(self.bin, "sbctl"), "-c", self.ini, *args],
                           cwd=self.root, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("sbctl %s failed (%d): %s%s"
                                 % (" ".join(args), p.returncode, p.stdout, p.stderr))
        return p

    def stack(self, *args, timeout=40):
        env = dict(os.environ, SB_STACK_PROFILE=self.profile)
        p = subprocess.run([self.stack_sh, *args], cwd=self.root, env=env,
                           capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError("stack.sh %s failed (%d): %s%s"
                                 % (" ".join(args), p.returncode, p.stdout, p.stderr))
        return p.stdout

    def live_instances(self):
        """Names of the instances the router reports alive (`sbctl status`)."""
        out = self.sbctl("status", timeout=10, check=False).stdout
        # A table (INSTANCE KIND PID …, one row per instance) or the raw
        # ADMIN lines (name=sm1 kind=sm …): accept both.
        names = set()
        for line in out.splitlines():
            if line.startswith("S2S CONNECTIONS"):
                break                   # the s2s table follows the instances
            words = line.split()
            if not words or words[0] == "INSTANCE":
                continue
            tagged = [w[5:] for w in words if w.startswith("name=")]
            names.add(tagged[0] if tagged else words[0])
        return names

    def wait_instances(self, present=(), absent=(), timeout=20):
        """Poll `sbctl status` until every name in `present` is listed and
        none in `absent` is."""
        def ok():
            live = self.live_instances()
            return set(present) <= live and not (set(absent) & live)
        wait_until(ok, timeout, "instances present=%s absent=%s (last: %s)"
                   % (sorted(present), sorted(absent), sorted(self.live_instances())))

    def add_user(self, prefix="u"):
        """A fresh account on the test domain: (bare JID, password)."""
        node = "%s%s" % (prefix, secrets.token_hex(5))
        password = secrets.token_urlsafe(12)
        jid = "%s@%s" % (node, self.domain)
        self.sbctl("user", "add", jid, password)
        return jid, password


def redis_cli(stack, *args, timeout=10, auth=True):
    """redis-cli against the profile's Redis, as its ACL user (auth=False:
    as an anonymous client, which the private Redis refuses)."""
    env = dict(os.environ)
    cmd = ["redis-cli", "-h", "127.0.0.1", "-p", stack.env["SB_REDIS_PORT"]]
    if auth and stack.env.get("SB_REDIS_PASSWORD_FILE"):
        with open(stack.env["SB_REDIS_PASSWORD_FILE"]) as f:
            env["REDISCLI_AUTH"] = f.read().strip()
        cmd += ["--user", stack.env.get("SB_REDIS_USER", "default")]
    return subprocess.run(cmd + list(args), env=env, capture_output=True, text=True,
                          timeout=timeout).stdout.strip()


# Envelope headers (common/ENVELOPE.md) for tests that speak ZeroMQ.
ENV_STANZA, ENV_CONTROL, ENV_HELLO, ENV_ADMIN, ENV_BOUNCE = 1, 2, 3, 4, 5
ROUTE_JID, ROUTE_INSTANCE, ROUTE_KIND, ROUTE_ROUTER = 1, 2, 3, 4


ENV_F_ROUTER = 0x40        # what only a router itself may say (members, instance-down)


def env_header(kind, route, key=b"", sender=b"rogue", sid=b"", op=b"", aux=b"", version=1,
               flags=0):
    import struct
    out = struct.pack("!BBBB", version, kind, route, flags)
    for s in (key, sender, sid, op, aux):
        out += struct.pack("!H", len(s)) + s
    return out


def read_key_file(path):
    """A key file of `sbctl keys generate`: {'public': b'…', 'secret': b'…'}."""
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            if k in ("public", "secret") and v:
                out[k] = v.encode()
    return out


def bus_dealer(stack, ctx, member, identity):
    """A ZeroMQ DEALER that joins the bus as `member` (its CURVE key from
    the profile's key directory): what a cluster component is on the wire."""
    import zmq
    keys = os.path.join(stack.env["SB_VAR"], "keys")
    mine = read_key_file(os.path.join(keys, member + ".key"))
    server = read_key_file(os.path.join(keys, "server.pub"))
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, identity)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_publickey = mine["public"]
    sock.curve_secretkey = mine["secret"]
    sock.curve_serverkey = server["public"]
    return sock


def wait_until(cond, timeout, what, interval=0.1):
    """Poll a synchronous condition until true or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


async def wait_async(cond, timeout, what, interval=0.05):
    """Same as wait_until, from inside the event loop."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        await asyncio.sleep(interval)


def run(coro, timeout=60):
    """Run one test coroutine in a fresh event loop, bounded."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def fnv1a64(data: bytes) -> int:
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def sm_for(bare_jid, sms=("sm1", "sm2")):
    """The sm the router picks for a bare JID (rendezvous hashing, ENVELOPE.md)."""
    return max(sms, key=lambda sm: fnv1a64((sm + "\n" + bare_jid).encode()))


_INSECURE_CTX = None


def insecure_tls_context():
    """One shared client context that accepts the self-signed dev certificate.
    (Shared: building a default context loads the CA store, ~20 ms each.)"""
    global _INSECURE_CTX
    if _INSECURE_CTX is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _INSECURE_CTX = ctx
    return _INSECURE_CTX


# ------------------------------------------------------------------ logs, SIGHUP
class Log:
    """A process's log from now on."""

    def __init__(self, stack, name):
        self.path = os.path.join(stack.env["SB_VAR"], "log", name + ".log")
        self.start = os.path.getsize(self.path)

    def text(self):
        with open(self.path, "rb") as f:
            f.seek(self.start)
            return f.read().decode("utf-8", "replace")

    def lines(self, needle):
        return [line for line in self.text().splitlines() if needle in line]


def sighup(stack, name):
    with open(os.path.join(stack.env["SB_VAR"], "pid", name + ".pid")) as f:
        os.kill(int(f.read().strip()), signal.SIGHUP)


def reload_and_wait(stack, name="c2s1"):
    log = Log(stack, name)
    sighup(stack, name)
    wait_until(lambda: log.lines("event=reload what=done"), 10, "%s to log its reload" % name)
    return log


# ------------------------------------------------------------------ slixmpp
@contextlib.contextmanager
def domains_with_config(stack, names, section, instance="c2s1"):
    """For a module fixture: add the domains, append section to
    the INI and reload `instance`; yield; then restore the INI, reload and
    delete the domains."""
    for name in names:
        stack.sbctl("domain", "add", name)
    with open(stack.ini) as f:
        saved = f.read()
    with open(stack.ini, "a") as f:
        f.write(section)
    reload_and_wait(stack, instance)
    try:
        yield
    finally:
        with open(stack.ini, "w") as f:
            f.write(saved)
        reload_and_wait(stack, instance)
        for name in names:
            stack.sbctl("domain", "del", name, "--force", check=False)


class LoginFailed(AssertionError):
    pass


def make_client(jid, password, *, mech=None, plugins=(), access_token=None):
    xmpp = slixmpp.ClientXMPP(jid, password, sasl_mech=mech)
    if access_token:
        xmpp.credentials["access_token"] = access_token     # X-OAUTH2
    if not (mech and mech.endswith("-PLUS")):
        # slixmpp binds only with tls-unique, which a TLS 1.3 server does
        # not offer (we offer tls-exporter and tls-server-end-point), yet it
        # picks -PLUS with it, and held to a plain SCRAM it sends the "y"
        # flag ("I could bind, you cannot"), a downgrade where -PLUS is
        # offered (RFC 5802 §6). A client with none of the offered types
        # leaves -PLUS alone and says "n" (test_scram_plus.py binds itself).
        fm = xmpp.plugin["feature_mechanisms"]
        creds = fm.sasl_callback

        def without_binding(required, optional):
            found = creds(required, optional)
            if "channel_binding" in found:
                found["channel_binding"] = None
            return found
        fm.sasl_callback = without_binding
        if not mech:
            fm.use_mechs = [m for m in SASL_MECHANISMS if not m.endswith("-PLUS")]
    # The dev certificate is self-signed.
    xmpp.ssl_context.check_hostname = False
    xmpp.ssl_context.verify_mode = ssl.CERT_NONE
    xmpp.use_ipv6 = False
    for p in plugins:
        xmpp.register_plugin(p)
    return xmpp


async def login(stack, jid, password, *, instance="c2s1", direct_tls=False, mech=None,
                plugins=(), presence=True, timeout=20, access_token=None):
    """Connect a slixmpp client and wait for session_start. Raises LoginFailed
    with the server's SASL condition (or the reason) when it does not get there."""
    xmpp = make_client(jid, password, mech=mech, plugins=plugins, access_token=access_token)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    xmpp.inbox = asyncio.Queue()

    def settle(result=None, error=None):
        if not done.done():
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)

    xmpp.add_event_handler("session_start", lambda _e: settle(xmpp))
    xmpp.add_event_handler("failed_auth",
                           lambda f: settle(error=LoginFailed("sasl failure: %s" % f["condition"])))
    xmpp.add_event_handler("failed_all_auth",
                           lambda _e: settle(error=LoginFailed("no acceptable SASL mechanism")))
    xmpp.add_event_handler("stream_error",
                           lambda e: settle(error=LoginFailed("stream error: %s" % e["condition"])))
    xmpp.add_event_handler("disconnected",
                           lambda _e: settle(error=LoginFailed("disconnected before session start")))
    xmpp.add_event_handler("connection_failed",
                           lambda e: settle(error=LoginFailed("connection failed: %s" % e)))
    xmpp.add_event_handler("message", lambda m: xmpp.inbox.put_nowait(m))

    port = stack.tls_port(instance) if direct_tls else stack.port(instance)
    xmpp.default_port = port          # slixmpp resolves "localhost" with this port
    xmpp.connect(("localhost", port), use_ssl=direct_tls, force_starttls=not direct_tls)
    try:
        await asyncio.wait_for(done, timeout)
    except asyncio.TimeoutError:
        xmpp.abort()
        raise LoginFailed("no session within %ss" % timeout)
    except BaseException:
        xmpp.abort()
        raise
    if presence:
        xmpp.send_presence()
    return xmpp


async def close(xmpp, timeout=5):
    """Clean close (</stream:stream>), bounded."""
    if xmpp is None:
        return
    try:
        await asyncio.wait_for(xmpp.disconnect(wait=1.0), timeout)
    except (asyncio.TimeoutError, Exception):
        xmpp.abort()


async def next_message(xmpp, timeout=10, body=None):
    """The next <message/> with a body (equal to `body` if given)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("%s got no message%s within %ss"
                                 % (xmpp.boundjid, " %r" % body if body else "", timeout))
        try:
            msg = await asyncio.wait_for(xmpp.inbox.get(), left)
        except asyncio.TimeoutError:
            continue
        if msg["body"] and (body is None or msg["body"] == body):
            return msg


async def iq_error_condition(xmpp, to, *, payload_ns="urn:xmpp:ping", timeout=5):
    """Send an iq get and return the error condition of the reply, None for a
    result, or 'timeout' when nothing came back in time."""
    iq = xmpp.make_iq_get(queryxmlns=None, ito=to)
    iq.append(ET.Element("{%s}ping" % payload_ns))
    try:
        await iq.send(timeout=timeout)
        return None
    except IqError as e:
        return e.iq["error"]["condition"]
    except IqTimeout:
        return "timeout"


# ------------------------------------------------------------------ raw stream
class StreamClosed(Exception):
    pass


class RawStream:
    """A hand-driven XMPP client stream: send bytes, read top-level elements.

    Used where the test is about the bytes (features before TLS, malformed
    XML, stream errors) or where slixmpp would be too heavy (hundreds of
    binds). `source`: the local address the TCP connection leaves from (any
    of 127.0.0.0/8; None: the kernel's choice, 127.0.0.1), for tests that
    stand for many clients (per-address limits, c2s/limits.c)."""

    def __init__(self, stack, instance="c2s1", direct_tls=False, to=None, source=None):
        self.stack = stack
        self.instance = instance
        self.direct_tls = direct_tls
        self.source = source
        self.to = to or stack.domain
        self.reader = self.writer = None
        self.parser = None
        self.root = None
        self.pending = []
        self.closed = False     # server closed the stream or the TCP connection
        self.jid = None

    # --- transport
    async def connect(self, timeout=10):
        port = self.stack.tls_port(self.instance) if self.direct_tls else self.stack.port(self.instance)
        ssl_ctx = insecure_tls_context() if self.direct_tls else None
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.stack.host, port, ssl=ssl_ctx,
                                    local_addr=(self.source, 0) if self.source else None,
                                    server_hostname=self.stack.domain if ssl_ctx else None),
            timeout)
        return self

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.writer.write(data)

    def abort(self):
        """Drop the TCP connection without closing the stream."""
        if self.writer is not None:
            self.writer.transport.abort()

    async def close(self):
        if self.writer is not None and not self.writer.is_closing():
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 3)
            except (asyncio.TimeoutError, OSError, ssl.SSLError):
                pass

    # --- XML
    def open_stream(self):
        self.parser = ET.XMLPullParser(("start", "end"))
        self.root = None
        self.pending = []
        self.send("<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
                  "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>" % self.to)

    def _drain_parser(self):
        for ev, el in self.parser.read_events():
            if ev == "start" and self.root is None:
                self.root = el
            elif ev == "end" and el is self.root:
                self.closed = True
                self.pending.append(None)          # </stream:stream>
            elif ev == "end" and self.root is not None and el in list(self.root):
                self.pending.append(el)
                self.root.remove(el)

    async def element(self, timeout=10):
        """The next top-level element; None when the server closed the stream."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no element from the server within %ss" % timeout)
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except asyncio.TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                return None
            self.parser.feed(data)
            self._drain_parser()
        return self.pending.pop(0)

    async def expect(self, tag, timeout=10):
        el = await self.element(timeout)
        if el is None or el.tag != tag:
            raise AssertionError("expected %s, got %s" % (tag, describe(el)))
        return el

    async def features(self, timeout=10):
        return await self.expect("{%s}features" % NS_STREAM, timeout)

    async def wait_closed(self, timeout=10):
        """Read until the server closes the stream or the connection."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            el = await self.element(max(0.01, deadline - time.monotonic()))
            if el is None:
                break

    # --- login steps
    async def starttls(self):
        self.send("<starttls xmlns='%s'/>" % NS_TLS)
        await self.expect("{%s}proceed" % NS_TLS)
        await self.writer.start_tls(insecure_tls_context(), server_hostname=self.stack.domain)
        self.open_stream()
        return await self.features()

    async def auth_plain(self, jid, password):
        """SASL PLAIN; returns the <success/> or <failure/> element."""
        node = jid.split("@", 1)[0]
        token = base64.b64encode(b"\0" + node.encode() + b"\0" + password.encode()).decode()
        self.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, token))
        return await self.element()

    async def bind(self, resource=None):
        res = "<resource>%s</resource>" % resource if resource else ""
        self.send("<iq type='set' id='bind1'><bind xmlns='%s'>%s</bind></iq>" % (NS_BIND, res))
        iq = await self.expect("{%s}iq" % NS_CLIENT, timeout=20)
        jid = iq.find("{%s}bind/{%s}jid" % (NS_BIND, NS_BIND))
        if iq.get("type") != "result" or jid is None:
            raise AssertionError("bind failed: %s" % describe(iq))
        self.jid = jid.text
        return self.jid

    async def login(self, jid, password, resource=None, timeout=30):
        """Connect, TLS, PLAIN, bind; returns the bound full JID."""
        async def steps():
            await self.connect()
            self.open_stream()
            await self.features()
            if not self.direct_tls:
                await self.starttls()
            ok = await self.auth_plain(jid, password)
            if ok is None or ok.tag != "{%s}success" % NS_SASL:
                raise AssertionError("PLAIN login failed: %s" % describe(ok))
            self.open_stream()
            await self.features()
            return await self.bind(resource)
        return await asyncio.wait_for(steps(), timeout)


def describe(el):
    if el is None:
        return "end of stream"
    return ET.tostring(el, encoding="unicode")[:400]


def mechanisms(features):
    return [m.text for m in features.findall("{%s}mechanisms/{%s}mechanism" % (NS_SASL, NS_SASL))]


def stream_error_condition(el):
    """The defined condition of a <stream:error/>, or None if el is not one."""
    if el is None or el.tag != "{%s}error" % NS_STREAM:
        return None
    for child in el:
        if child.tag.startswith("{%s}" % NS_STREAMS_ERR) and not child.tag.endswith("}text"):
            return child.tag.split("}", 1)[1]
    return "?"
