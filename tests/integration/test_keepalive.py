"""c2s keepalive (XEP-0199 server pings, whitespace keepalives, idle and
login deadlines) against an extra front-end started here with short
intervals through SB_C2S_* environment overrides, so the rest of the
suite keeps the default 120 s."""

import asyncio
import os
import signal
import socket
import subprocess
import time

import pytest

from xmpptest import RawStream, describe, run, stream_error_condition, NS_CLIENT

NS_PING = "urn:xmpp:ping"
INSTANCE = "c2s9"
PING_INTERVAL = 1
PING_TIMEOUT = 1
LOGIN_TIMEOUT = 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fast_c2s(stack):
    port, tls_port = free_port(), free_port()
    env = dict(os.environ, SB_C2S_PORT=str(port), SB_C2S_TLS_PORT=str(tls_port),
               SB_C2S_PING_INTERVAL=str(PING_INTERVAL), SB_C2S_PING_TIMEOUT=str(PING_TIMEOUT),
               SB_C2S_LOGIN_TIMEOUT=str(LOGIN_TIMEOUT))
    log = open(os.path.join(stack.env.get("SB_VAR", os.path.join(stack.root, "var/test")),
                            "log", INSTANCE + ".log"), "ab")
    proc = subprocess.Popen([os.path.join(stack.bin, "sb-c2s"), "-c", stack.ini, "-n", INSTANCE],
                            cwd=stack.root, env=env, stdout=log, stderr=subprocess.STDOUT)
    stack.c2s[INSTANCE] = (port, tls_port)
    try:
        stack.wait_instances(present=[INSTANCE], timeout=15)
        deadline = time.monotonic() + 15
        while True:     # accepting starts once its domains are loaded
            try:
                socket.create_connection(("127.0.0.1", tls_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "c2s9 not accepting"
                time.sleep(0.1)
        yield INSTANCE
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        del stack.c2s[INSTANCE]


async def own_ping_answered(s, domain):
    """Our own ping gets its result (server pings meanwhile are answered)."""
    s.send("<iq type='get' id='me'><ping xmlns='urn:xmpp:ping'/></iq>")
    while True:
        el = await s.element(timeout=5)
        if is_server_ping(el):
            s.send("<iq type='result' id='%s' to='%s'/>" % (el.get("id"), domain))
            continue
        assert el.get("id") == "me" and el.get("type") == "result", describe(el)
        return


def is_server_ping(el):
    return (el is not None and el.tag == "{%s}iq" % NS_CLIENT and el.get("type") == "get"
            and el.find("{%s}ping" % NS_PING) is not None)


def test_silent_client_is_pinged_then_closed_with_connection_timeout(stack, new_user, fast_c2s):
    jid, pw = new_user("kas")

    async def go():
        s = RawStream(stack, instance=fast_c2s, direct_tls=True)
        full = await s.login(jid, pw)
        t0 = time.monotonic()
        try:
            ping = await s.element(timeout=PING_INTERVAL + 3)
            assert is_server_ping(ping), describe(ping)
            assert ping.get("to") == full and ping.get("from") == stack.domain
            # We never answer: the stream ends with connection-timeout.
            err = await s.element(timeout=PING_TIMEOUT + 3)
            assert stream_error_condition(err) == "connection-timeout", describe(err)
            await s.wait_closed(timeout=5)
            assert s.closed
            elapsed = time.monotonic() - t0
            assert PING_INTERVAL + PING_TIMEOUT - 0.5 <= elapsed < PING_INTERVAL + PING_TIMEOUT + 3
        finally:
            s.abort()
    run(go())


def test_clients_that_answer_pings_or_send_whitespace_stay_connected(stack, new_user, fast_c2s):
    jid, pw = new_user("kaa")

    async def answering():
        s = RawStream(stack, instance=fast_c2s, direct_tls=True)
        await s.login(jid, pw)
        pings = 0
        try:
            end = time.monotonic() + 4 * PING_INTERVAL + 1
            while time.monotonic() < end:
                try:
                    el = await s.element(timeout=max(0.05, end - time.monotonic()))
                except AssertionError:
                    break                               # quiet until the end: fine
                assert is_server_ping(el), describe(el)
                pings += 1
                s.send("<iq type='result' id='%s' to='%s'/>" % (el.get("id"), stack.domain))
            assert pings >= 2
            await own_ping_answered(s, stack.domain)     # still usable
        finally:
            s.abort()

    async def whitespace():
        s = RawStream(stack, instance=fast_c2s, direct_tls=True)
        await s.login(jid, pw)
        try:
            end = time.monotonic() + 4 * PING_INTERVAL
            while time.monotonic() < end:
                s.send(" ")
                try:
                    el = await s.element(timeout=PING_INTERVAL / 3)
                    raise AssertionError("unexpected while sending keepalives: %s" % describe(el))
                except AssertionError as e:
                    if "no element" not in str(e):
                        raise
            await own_ping_answered(s, stack.domain)
        finally:
            s.abort()

    async def go():
        await asyncio.gather(answering(), whitespace())
    run(go())


def test_connection_that_never_logs_in_is_closed_after_login_timeout(stack, fast_c2s):
    async def go():
        s = RawStream(stack, instance=fast_c2s, direct_tls=True)
        await s.connect()
        t0 = time.monotonic()
        try:
            s.open_stream()
            await s.features()
            el = await s.element(timeout=LOGIN_TIMEOUT + 3)
            assert stream_error_condition(el) == "connection-timeout", describe(el)
            assert time.monotonic() - t0 >= LOGIN_TIMEOUT - 0.5
        finally:
            s.abort()
    run(go())
