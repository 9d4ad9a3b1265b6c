"""Several routers and leases (router/README.md): a chat between two
front-ends keeps flowing while each router in turn is killed with -9 and
started again; a router started late knows the cluster within seconds; a
front-end frozen (SIGSTOP) for less than its lease keeps its clients
reachable, one frozen for longer closes their streams when it wakes up
(its sessions were ended cluster-wide meanwhile, and what was sent to them
went to offline storage); a component that finds no router exits with a
clear error after a bounded wait."""

import asyncio
import os
import signal
import subprocess
import time

from imclient import IMClient
from xmpptest import close, login, run, wait_async, wait_until

NS_STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"


def _pid(stack, name):
    var = stack.env.get("SB_VAR", os.path.join(stack.root, "var/test"))
    with open(os.path.join(var, "pid", name + ".pid")) as f:
        return int(f.read().strip())


def _router_endpoint(stack, n):
    return "tcp://127.0.0.1:%d" % (int(stack.env["SB_ROUTER_PORT"]) + n - 1)


def _status_via(stack, endpoint):
    """`sbctl status` asking only the router at endpoint: instance names,
    or None when it does not answer."""
    env = dict(os.environ, SB_CLUSTER_ROUTERS=endpoint)
    p = subprocess.run([os.path.join(stack.bin, "sbctl"), "-c", stack.ini, "status"],
                       cwd=stack.root, env=env, capture_output=True, text=True, timeout=10)
    if "INSTANCE" not in p.stdout:      # no table: that router did not answer
        return None                     # (exit 1 alone may be another problem)
    names = set()
    for line in p.stdout.splitlines():
        if line.startswith(("S2S CONNECTIONS", "ROUTERS")):
            break
        words = line.split()
        if words and words[0] != "INSTANCE":
            names.add(words[0])
    return names


COMPONENTS = {"sm1", "sm2", "c2s1", "c2s2", "bosh1", "s2s1"}


def _wait_router_knows_all(stack, n, timeout=20):
    ep = _router_endpoint(stack, n)
    wait_until(lambda: COMPONENTS <= (_status_via(stack, ep) or set()), timeout,
               "router%d to list every component" % n)


def _restart_sms(stack, **env):
    """Restart sm1 and sm2 with extra environment (e.g. no direct socket)."""
    e = dict(os.environ, SB_STACK_PROFILE=stack.profile, **env)
    for name in ("sm1", "sm2"):
        for cmd in ("stop-proc", "start-proc"):
            subprocess.run([stack.stack_sh, cmd, name], cwd=stack.root, env=e, check=True,
                           capture_output=True, timeout=40)
    stack.wait_instances(present=["sm1", "sm2"], timeout=20)


def test_chat_flows_while_each_router_is_killed_and_restarted(stack, two_users):
    """The normal path: c2s → sm → c2s directly; the routers' deaths must
    not touch it (nor the sessions, nor the leases)."""
    _chat_through_router_kills(stack, two_users)


def test_chat_through_the_routers_survives_each_router_kill(stack, two_users):
    """With the direct path off every stanza crosses a router: what a dying
    router had taken but not confirmed is re-sent through the other one,
    so nothing is lost without an error, nothing twice, order kept."""
    _restart_sms(stack, SB_SM_DIRECT_BIND="")
    try:
        def sms_without_direct():
            # a router may miss sbctl's 1 s on a loaded machine: ask again
            out = stack.sbctl("status", timeout=10, check=False).stdout
            sms = [l for l in out.splitlines() if l.split()[1:2] == ["sm"]]
            return len(sms) == 2 and not any("tcp://" in l for l in sms)
        wait_until(sms_without_direct, 20, "both sms listed without a direct endpoint")
        _chat_through_router_kills(stack, two_users)
    finally:
        _restart_sms(stack)


def _chat_through_router_kills(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users
    for n in (1, 2):
        _wait_router_knows_all(stack, n)

    async def go():
        a = await login(stack, a_jid, a_pw, instance="c2s1")
        b = await login(stack, b_jid, b_pw, instance="c2s2")
        got = {a_jid: [], b_jid: []}       # bodies received, per receiver
        errors = {a_jid: [], b_jid: []}    # bodies bounced back, per sender

        def on_message(me):
            def handler(m):
                if m["type"] == "error":
                    errors[me].append(m["body"])
                elif m["body"].startswith("seq "):
                    got[me].append(m["body"])
            return handler
        a.add_event_handler("message", on_message(a_jid))
        b.add_event_handler("message", on_message(b_jid))
        sent = {a_jid: [], b_jid: []}
        stop = asyncio.Event()

        async def sender(frm, client, to):
            i = 0
            while not stop.is_set():
                body = "seq %s %05d" % (frm.split("@")[0], i)
                client.send_message(mto=to, mbody=body, mtype="chat")
                sent[frm].append(body)
                i += 1
                await asyncio.sleep(0.02)
        tasks = [asyncio.ensure_future(sender(a_jid, a, b.boundjid.full)),
                 asyncio.ensure_future(sender(b_jid, b, a.boundjid.full))]
        try:
            for name, n in (("router1", 1), ("router2", 2)):
                await asyncio.sleep(1.0)
                await asyncio.to_thread(stack.stack, "kill-proc", name)
                await asyncio.sleep(1.5)    # the flow goes on without it
                await asyncio.to_thread(stack.stack, "start-proc", name)
                await asyncio.to_thread(_wait_router_knows_all, stack, n)
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await asyncio.gather(*tasks)

        def settled():
            return (len(got[b_jid]) + len(errors[a_jid]) >= len(sent[a_jid]) and
                    len(got[a_jid]) + len(errors[b_jid]) >= len(sent[b_jid]))
        try:
            await wait_async(settled, 15, "every message delivered or bounced")
        finally:
            for frm, to in ((a_jid, b_jid), (b_jid, a_jid)):
                # exactly once, in the sender's order, nothing silently lost
                assert len(got[to]) == len(set(got[to])), "duplicates to %s" % to
                assert got[to] == sorted(got[to]), "out of order to %s" % to
                missing = set(sent[frm]) - set(got[to]) - set(errors[frm])
                assert not missing, "%d of %d lost without an error, e.g. %s" % (
                    len(missing), len(sent[frm]), sorted(missing)[:3])
            assert len(sent[a_jid]) > 100 and len(sent[b_jid]) > 100
            # both clients stayed logged in throughout
            assert a.is_connected() and b.is_connected()
            await close(a)
            await close(b)
    run(go(), timeout=120)


def test_a_router_started_late_learns_the_cluster_within_seconds(stack):
    ep = _router_endpoint(stack, 2)
    stack.stack("stop-proc", "router2")
    try:
        assert _status_via(stack, ep) is None
        # the cluster goes on with router1 alone
        stack.wait_instances(present=sorted(COMPONENTS), timeout=10)
    finally:
        stack.stack("start-proc", "router2")
    t0 = time.monotonic()
    _wait_router_knows_all(stack, 2, timeout=10)
    assert time.monotonic() - t0 < 5, "router2 took %.1fs" % (time.monotonic() - t0)


def test_a_component_with_no_router_exits_with_a_clear_error(stack, tmp_path):
    env = dict(os.environ, SB_CLUSTER_ROUTERS="tcp://127.0.0.1:9", SB_CLUSTER_ROUTER_WAIT="2")
    t0 = time.monotonic()
    p = subprocess.run([os.path.join(stack.bin, "sb-sm"), "-c", stack.ini, "-n", "sm3"],
                       cwd=stack.root, env=env, capture_output=True, text=True, timeout=30)
    took = time.monotonic() - t0
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
    assert "event=start_failed why=no-router" in p.stderr, p.stderr[-2000:]
    assert 2 <= took < 15, took


async def _reachable(frm, to, body, timeout=5):
    frm.message(to.jid, body)
    await to.message_with(body, timeout=timeout)


def test_a_front_end_frozen_within_its_lease_keeps_its_clients(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        a = await IMClient(stack, a_jid, a_pw, instance="c2s1").login()
        b = await IMClient(stack, b_jid, b_pw, instance="c2s2").login()
        pid = _pid(stack, "c2s1")
        try:
            await _reachable(b, a, "before the freeze")
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(1.8)    # the stimulus: beyond the 1 s heartbeat
                b.message(a.jid, "during the freeze")
            finally:
                os.kill(pid, signal.SIGCONT)
            await a.message_with("during the freeze", timeout=5)
            await _reachable(b, a, "after the freeze")
            await _reachable(a, b, "back from the frozen one")
            assert not a.raw.closed
        finally:
            await a.close()
            await b.close()
    run(go(), timeout=60)
    assert "c2s1" in stack.live_instances()


def test_a_front_end_frozen_past_its_lease_closes_its_streams(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        a = await IMClient(stack, a_jid, a_pw, instance="c2s1").login()
        a.presence()
        b = await IMClient(stack, b_jid, b_pw, instance="c2s2").login()
        pid = _pid(stack, "c2s1")
        try:
            await _reachable(b, a, "before the freeze")
            os.kill(pid, signal.SIGSTOP)
            try:
                # the routers see its lease run out and end its sessions
                await asyncio.to_thread(stack.wait_instances, absent=("c2s1",), timeout=15)
                # a's session is gone: this goes to offline storage, no error
                b.message(a_jid, "while it was dead")
                await b.barrier(a_jid)
                await b.nothing(lambda e: e.get("type") == "error", wait=0.5)
            finally:
                os.kill(pid, signal.SIGCONT)
            # on waking, c2s1 closes the stream it can no longer serve
            el = await a.raw.element(timeout=10)
            while el is not None and el.tag != "{http://etherx.jabber.org/streams}error":
                el = await a.raw.element(timeout=10)
            assert el is not None, "stream closed without a stream error"
            assert el.find("{%s}connection-timeout" % NS_STREAMS) is not None
            await a.raw.wait_closed(timeout=5)
            assert a.raw.closed
            # it rejoins the cluster; logging in again gets the message
            await asyncio.to_thread(stack.wait_instances, present=("c2s1",), timeout=15)
            a2 = await IMClient(stack, a_jid, a_pw, instance="c2s1").login()
            a2.presence()
            await a2.message_with("while it was dead", timeout=10)
            await a2.close()
        finally:
            await a.close()
            await b.close()
    run(go(), timeout=90)


def test_a_frozen_redis_ends_no_session(stack, two_users):
    """Leases live in Redis; a Redis that stops answering (SIGSTOP) for
    longer than the lease is a store outage, not a cluster-wide death:
    nobody is declared dead, no stream is closed, chat goes on after."""
    (a_jid, a_pw), (b_jid, b_pw) = two_users
    logs = {n: os.path.join(stack.env["SB_VAR"], "log", n + ".log") for n in ("c2s1", "c2s2")}
    start = {n: os.path.getsize(p) for n, p in logs.items()}

    async def go():
        a = await IMClient(stack, a_jid, a_pw, instance="c2s1").login()
        b = await IMClient(stack, b_jid, b_pw, instance="c2s2").login()
        pid = _pid(stack, "redis")
        try:
            await _reachable(b, a, "before the freeze")
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(4.5)    # the stimulus: longer than the 3 s lease
            finally:
                os.kill(pid, signal.SIGCONT)
            await _reachable(b, a, "after the freeze", timeout=10)
            await _reachable(a, b, "and back", timeout=10)
            assert not a.raw.closed and not b.raw.closed
        finally:
            await a.close()
            await b.close()
    run(go(), timeout=60)
    live = stack.live_instances()
    assert COMPONENTS <= live, live
    for name, path in logs.items():
        with open(path, errors="replace") as f:
            f.seek(start[name])
            assert "event=lease_lost" not in f.read(), name


def test_a_third_router_joins_with_a_process_start(stack, two_users):
    """router3 is only started (a bind of its own, a member key): it
    announces itself through its lease, every component connects to it
    within seconds, and it alone then carries the cluster — the leases of
    everyone stay renewed and chat goes on — while router1 and router2
    are down."""
    (a_jid, a_pw), (b_jid, b_pw) = two_users
    port3 = int(stack.env["SB_ROUTER_PORT"]) + 2
    ep3 = "tcp://127.0.0.1:%d" % port3
    log = os.path.join(stack.env["SB_VAR"], "log", "router3.log")
    env = dict(os.environ, SB_ROUTER_BIND=ep3)
    with open(log, "a") as out:
        r3 = subprocess.Popen([os.path.join(stack.bin, "sb-router"), "-c", stack.ini, "-n",
                               "router3"], cwd=stack.root, env=env, stdout=out,
                              stderr=subprocess.STDOUT)

    offsets = {}

    def learned(name):
        with open(os.path.join(stack.env["SB_VAR"], "log", name + ".log"), errors="replace") as f:
            return "event=link_router_learned router=router3" in f.read()
    try:
        wait_until(lambda: COMPONENTS <= (_status_via(stack, ep3) or set()), 10,
                   "router3 to list the cluster")
        wait_until(lambda: all(learned(n) for n in COMPONENTS), 10,
                   "every component to connect to router3")

        async def go():
            a = await IMClient(stack, a_jid, a_pw, instance="c2s1").login()
            b = await IMClient(stack, b_jid, b_pw, instance="c2s2").login()
            try:
                await _reachable(b, a, "with three routers")
                for n in COMPONENTS:
                    offsets[n] = os.path.getsize(os.path.join(stack.env["SB_VAR"], "log",
                                                              n + ".log"))
                stack.stack("kill-proc", "router1")
                stack.stack("kill-proc", "router2")
                try:
                    # past a lease: only router3 renews them now
                    t0 = time.monotonic()
                    while time.monotonic() - t0 < 4.5:
                        await _reachable(a, b, "router3 alone %.1f" % (time.monotonic() - t0))
                        await asyncio.sleep(0.5)
                    assert COMPONENTS <= (_status_via(stack, ep3) or set())
                    assert not a.raw.closed and not b.raw.closed
                finally:
                    stack.stack("start-proc", "router1")
                    stack.stack("start-proc", "router2")
            finally:
                await a.close()
                await b.close()
        run(go(), timeout=60)
        for n in (1, 2):
            _wait_router_knows_all(stack, n)
        # Every component must hold its lease through router1/2 again before
        # router3 goes, or the ones that had not reconnected yet lose it.
        def reconfirmed(name):
            with open(os.path.join(stack.env["SB_VAR"], "log", name + ".log"),
                      errors="replace") as f:
                text = f.read()[offsets[name]:]
            return all("event=link_router_up endpoint=\"%s\"" % _router_endpoint(stack, n)
                       in text for n in (1, 2))
        wait_until(lambda: all(reconfirmed(n) for n in COMPONENTS), 15,
                   "every component to be acknowledged by router1 and router2 again")
    finally:
        r3.terminate()
        try:
            r3.wait(10)
        except subprocess.TimeoutExpired:
            r3.kill()
            r3.wait()
