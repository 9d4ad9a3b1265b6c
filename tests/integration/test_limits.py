"""Floods and reloads against extra front-ends started here, so the rest of
the suite keeps its defaults:

- c2s7 (low limits through SB_C2S_* overrides): a client sending faster than
  max_rate is slowed (its bytes wait in the kernel) and one flooding
  stanzas is closed with policy-violation, while other users of the same
  process keep chatting.
- c2s8 (its own copy of the INI file): SIGHUP reloads the log level and the
  TLS certificate (a new connection presents the new one, a running session
  goes on)."""

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import types

import pytest

from xmpptest import (RawStream, close, describe, login, next_message, run,
                      stream_error_condition, wait_until, NS_CLIENT)

MAX_RATE = 32768            # bytes/s (c2s7)
MAX_STANZAS = 20            # per second (c2s7)
STANZA_BURST = 100


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def var_dir(stack):
    return stack.env.get("SB_VAR", os.path.join(stack.root, "var/test"))


class ExtraC2S:
    """One more sb-c2s of the test cluster, stopped with SIGTERM at the end."""

    def __init__(self, stack, name, env=None, ini=None, ports=None, kind="c2s", preexec_fn=None):
        self.stack, self.name = stack, name
        self.port, self.tls_port = ports or (free_port(), free_port())
        self.log_path = os.path.join(var_dir(stack), "log", name + ".log")
        full_env = dict(os.environ, **(env or {}))
        if ini is None:
            ini = stack.ini
            up = kind.upper()
            full_env.update({"SB_%s_PORT" % up: str(self.port),
                             "SB_%s_TLS_PORT" % up: str(self.tls_port)})
        self.log = open(self.log_path, "ab")
        self.log_from = self.log.seek(0, os.SEEK_END)   # this run's lines only
        self.proc = subprocess.Popen([os.path.join(stack.bin, "sb-" + kind), "-c", ini, "-n", name],
                                     cwd=stack.root, env=full_env, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
        stack.c2s[name] = (self.port, self.tls_port)

    def wait_ready(self):
        self.stack.wait_instances(present=[self.name], timeout=15)
        deadline = time.monotonic() + 15
        while True:     # accepting starts once its domains are loaded
            try:
                socket.create_connection(("127.0.0.1", self.tls_port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "%s not accepting" % self.name
                time.sleep(0.1)

    def log_text(self):
        with open(self.log_path, "rb") as f:
            f.seek(self.log_from)
            return f.read().decode(errors="replace")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            rc = None
        self.log.close()
        self.stack.c2s.pop(self.name, None)
        return rc


@pytest.fixture(scope="module")
def slow_c2s(stack):
    c = ExtraC2S(stack, "c2s7", env={
        "SB_C2S_MAX_RATE": str(MAX_RATE), "SB_C2S_RATE_BURST": str(MAX_RATE),
        "SB_C2S_MAX_STANZAS_PER_SEC": str(MAX_STANZAS),
        "SB_C2S_STANZA_BURST": str(STANZA_BURST)})
    try:
        c.wait_ready()
        yield c
    finally:
        assert c.stop() == 0, "c2s7 did not exit cleanly on SIGTERM"


async def chat_keeps_flowing(stack, a, b, b_jid, until, label):
    """a sends to b every 0.2 s until `until` is done; each message must
    arrive within 5 s (a generous bound: normal latency is milliseconds)."""
    n = 0
    while not until.done() or n < 3:
        body = "%s %d" % (label, n)
        a.send_message(mto=b_jid, mbody=body, mtype="chat")
        await next_message(b, timeout=5, body=body)
        n += 1
        await asyncio.sleep(0.2)
    return n


def test_stanza_flood_is_closed_with_policy_violation_while_others_chat(stack, new_user,
                                                                       slow_c2s):
    (f_jid, f_pw), (a_jid, a_pw), (b_jid, b_pw) = new_user("flood"), new_user(), new_user()

    async def go():
        a = b = None
        f = RawStream(stack, instance="c2s7", direct_tls=True)
        try:
            b = await login(stack, b_jid, b_pw, instance="c2s7")
            a = await login(stack, a_jid, a_pw, instance="c2s7")
            await f.login(f_jid, f_pw)

            async def flood():
                # type=error to nobody: the sm never answers an error, so the
                # only thing coming back is the stream error.
                one = "<message type='error' to='nobody@%s'><body>x</body></message>" % stack.domain
                for _ in range(40):
                    f.send(one * 100)
                    await f.writer.drain()
                err = await f.element(timeout=15)
                while err is not None and stream_error_condition(err) is None:
                    err = await f.element(timeout=15)
                return err
            flood_task = asyncio.ensure_future(flood())
            n = await chat_keeps_flowing(stack, a, b, b_jid, flood_task, "during flood")
            err = await flood_task
            assert stream_error_condition(err) == "policy-violation", describe(err)
            await f.wait_closed()
            assert f.closed
            assert n >= 3
            wait_until(lambda: "event=rate_limited" in slow_c2s.log_text()
                       and f_jid in slow_c2s.log_text(), 5, "rate_limited log line")
            # The flooder may log in again (and behave).
            again = RawStream(stack, instance="c2s7", direct_tls=True)
            try:
                await again.login(f_jid, f_pw)
            finally:
                await again.close()
        finally:
            await f.close()
            await close(a)
            await close(b)
    run(go(), timeout=90)


def test_fast_sender_is_throttled_not_closed_while_others_chat(stack, new_user, slow_c2s):
    (f_jid, f_pw), (a_jid, a_pw), (b_jid, b_pw) = new_user("fast"), new_user(), new_user()
    chunk = 16 * 1024
    count = 10                  # 160 KiB at 32 KiB/s after a 32 KiB burst: ~4 s

    async def go():
        a = b = None
        f = RawStream(stack, instance="c2s7", direct_tls=True)
        try:
            b = await login(stack, b_jid, b_pw, instance="c2s7")
            a = await login(stack, a_jid, a_pw, instance="c2s7")
            await f.login(f_jid, f_pw)

            async def fast():
                t0 = time.monotonic()
                big = "<message type='error' to='nobody@%s'><body>%s</body></message>" % (
                    stack.domain, "y" * chunk)
                for _ in range(count):
                    f.send(big)
                f.send("<iq type='get' id='after-burst'><ping xmlns='urn:xmpp:ping'/></iq>")
                el = await f.element(timeout=30)
                return el, time.monotonic() - t0
            fast_task = asyncio.ensure_future(fast())
            await chat_keeps_flowing(stack, a, b, b_jid, fast_task, "during burst")
            el, took = await fast_task
            assert el is not None and el.tag == "{%s}iq" % NS_CLIENT, describe(el)
            assert el.get("id") == "after-burst" and el.get("type") == "result", describe(el)
            expected = (count * chunk - MAX_RATE) / MAX_RATE
            assert took >= expected * 0.6, "not throttled: %.2fs for %d bytes" % (
                took, count * chunk)
            assert not f.closed
        finally:
            await f.close()
            await close(a)
            await close(b)
    run(go(), timeout=90)


# ---------------------------------------------------------------- SIGHUP

def make_cert(path_dir, cn):
    key, cert, tmpl = (os.path.join(path_dir, n) for n in ("key2.pem", "cert2.pem", "cert2.cfg"))
    with open(tmpl, "w") as f:
        f.write('cn = "%s"\nserial = 4242\nexpiration_days = 2\ntls_www_server\n'
                'signing_key\nencryption_key\ndns_name = "localhost"\n' % cn)
    subprocess.run(["certtool", "--generate-privkey", "--key-type=ecdsa", "--curve=secp256r1",
                    "--outfile", key], check=True, capture_output=True, timeout=30)
    subprocess.run(["certtool", "--generate-self-signed", "--load-privkey", key,
                    "--template", tmpl, "--outfile", cert], check=True, capture_output=True,
                   timeout=30)
    return cert, key


def peer_cert_der(port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.getpeercert(binary_form=True)


def pem_to_der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def test_sighup_reloads_log_level_certificate_and_limits(stack, new_user, tmp_path):
    jid, password = new_user()
    name = "c2s8"
    port, tls_port = free_port(), free_port()
    ini = str(tmp_path / "switchboard.ini")
    shutil.copy(stack.ini, ini)
    section = "\n[c2s.%s]\nport = %d\ntls_port = %d\n" % (name, port, tls_port)
    with open(ini, "a") as f:
        f.write(section + "log_level = info\n")
    c = ExtraC2S(stack, name, ini=ini, ports=(port, tls_port))
    try:
        c.wait_ready()
        old_der = peer_cert_der(tls_port)

        async def go():
            s = RawStream(stack, instance=name, direct_tls=True)
            try:
                await s.login(jid, password)          # a session across the reload
                cert, key = make_cert(str(tmp_path), "reloaded.switchboard.test")
                with open(ini, "a") as f:
                    f.write(section + "log_level = debug\ncert = %s\nkey = %s\n"
                            "max_stanzas_per_sec = 50\n" % (cert, key))
                c.proc.send_signal(signal.SIGHUP)
                wait_until(lambda: "event=reload what=done" in c.log_text(), 10, "reload logged")
                log = c.log_text()
                assert "event=reload what=log_level from=info to=debug" in log, log[-2000:]
                assert "changed=max_stanzas_per_sec" in log and "tls=reloaded" in log, log[-2000:]
                new_der = peer_cert_der(tls_port)
                assert new_der != old_der
                assert new_der == pem_to_der(cert)
                # debug lines now appear (a new connection logs accept at debug)
                wait_until(lambda: "level=debug" in c.log_text(), 5, "debug lines after reload")
                # the running session was not dropped
                s.send("<iq type='get' id='still'><ping xmlns='urn:xmpp:ping'/></iq>")
                el = await s.element(timeout=10)
                assert el is not None and el.get("id") == "still", describe(el)
                # a bad file keeps what is in force
                with open(ini, "a") as f:
                    f.write("[broken\n")
                c.proc.send_signal(signal.SIGHUP)
                wait_until(lambda: "event=reload_failed" in c.log_text(), 10, "reload_failed")
                assert peer_cert_der(tls_port) == new_der
                again = RawStream(stack, instance=name, direct_tls=True)
                try:
                    await again.login(jid, password)
                finally:
                    await again.close()
            finally:
                await s.close()
        run(go(), timeout=60)
    finally:
        assert c.stop() == 0, "c2s8 did not exit cleanly on SIGTERM"


# ---------------------------------------------------------------- WebSocket

@pytest.fixture(scope="module")
def slow_bosh(stack):
    c = ExtraC2S(stack, "bosh7", kind="bosh", env={
        "SB_BOSH_MAX_RATE": str(MAX_RATE), "SB_BOSH_RATE_BURST": str(MAX_RATE),
        "SB_BOSH_MAX_STANZAS_PER_SEC": str(MAX_STANZAS),
        "SB_BOSH_STANZA_BURST": str(STANZA_BURST)})
    stack.c2s.pop("bosh7", None)
    try:
        c.wait_ready()
        # webtest reads the HTTP port from the environment of the stack
        yield c, types.SimpleNamespace(env=dict(stack.env, SB_BOSH_PORT=str(c.port),
                                                SB_BOSH_TLS_PORT=str(c.tls_port)))
    finally:
        assert c.stop() == 0, "bosh7 did not exit cleanly on SIGTERM"


def test_websocket_stanza_flood_gets_policy_violation(stack, slow_bosh):
    from webtest import WebSocket, WsClosed, anon_domain
    _, web = slow_bosh

    async def go():
        ws = WebSocket(web)
        try:
            assert await ws.connect() == 101
            await ws.login_anonymous(anon_domain(stack))
            one = ("<message xmlns='jabber:client' type='error' to='nobody@%s'>"
                   "<body>x</body></message>" % stack.domain)
            for _ in range(STANZA_BURST * 4):
                ws.send(one)
            await ws.writer.drain()
            err = None
            try:
                while True:
                    el = await ws.element(timeout=15)
                    if stream_error_condition(el):
                        err = el
                        break
            except WsClosed:
                pass
            assert stream_error_condition(err) == "policy-violation", describe(err)
        finally:
            await ws.close()
    run(go(), timeout=60)


def test_websocket_fast_sender_is_throttled_not_closed(stack, slow_bosh):
    from webtest import WebSocket, anon_domain
    _, web = slow_bosh
    chunk, count = 16 * 1024, 10

    async def go():
        ws = WebSocket(web)
        try:
            assert await ws.connect() == 101
            await ws.login_anonymous(anon_domain(stack))
            t0 = time.monotonic()
            big = ("<message xmlns='jabber:client' type='error' to='nobody@%s'><body>%s</body>"
                   "</message>" % (stack.domain, "y" * chunk))
            for _ in range(count):
                ws.send(big)
            ws.send("<iq xmlns='jabber:client' type='get' id='after-burst'>"
                    "<ping xmlns='urn:xmpp:ping'/></iq>")
            el = await ws.element(timeout=30)
            took = time.monotonic() - t0
            assert el.get("id") == "after-burst" and el.get("type") == "result", describe(el)
            expected = (count * chunk - MAX_RATE) / MAX_RATE
            assert took >= expected * 0.6, "not throttled: %.2fs" % took
        finally:
            await ws.close()
    run(go(), timeout=60)
