"""A cluster on separate hosts, made of network namespaces joined by a
bridge on a private test subnet (10.213.0.0/24, created here):

    sbmh-db  10.213.0.1  PostgreSQL + Redis
    sbmh-h1  10.213.0.2  router1 sm1 c2s1
    sbmh-h2  10.213.0.3  router2 sm2 c2s2 bosh1
    sbmh-cl  10.213.0.4  the clients

Every process listens on its host's address only (router bind/advertise,
sm direct_bind 0.0.0.0 + direct_advertise, c2s/bosh listen), nothing on a
loopback another host would need. Users on the two hosts chat; then host 1
is taken down whole (its processes killed, its link down) and the users on
host 2 keep chatting on the streams they have, without logging in again,
while host 1's users are gone cluster-wide. Skipped, with the reason, only
where network namespaces cannot be made."""

import asyncio
import ctypes
import os
import secrets
import shutil
import subprocess
import threading
import time

import pytest

from imclient import IMClient
from xmpptest import wait_until

NET = "10.213.0"
HOSTS = {"sbmh-db": 1, "sbmh-h1": 2, "sbmh-h2": 3, "sbmh-cl": 4}
SW = "sbmh-sw"
PGBIN = "/usr/lib/postgresql/15/bin"
CLONE_NEWNET = 0x40000000


def sh(*cmd, check=True, timeout=30, **kw):
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (%d): %s%s" % (" ".join(cmd), p.returncode, p.stdout,
                                                       p.stderr))
    return p


def in_ns(ns, *cmd):
    return ["ip", "netns", "exec", ns, *cmd]


def addr(ns):
    return "%s.%d" % (NET, HOSTS[ns])


class Net:
    """The namespaces, a bridge in its own namespace, one veth per host."""

    def up(self):
        self.down()
        sh("ip", "netns", "add", SW)
        sh(*in_ns(SW, "ip", "link", "add", "br0", "type", "bridge"))
        sh(*in_ns(SW, "ip", "link", "set", "br0", "up"))
        for ns, n in HOSTS.items():
            sh("ip", "netns", "add", ns)
            sh(*in_ns(ns, "ip", "link", "set", "lo", "up"))
            sh("ip", "link", "add", "mh%d" % n, "netns", ns, "type", "veth", "peer", "name",
               "mh%dp" % n, "netns", SW)
            sh(*in_ns(ns, "ip", "addr", "add", "%s/24" % addr(ns), "dev", "mh%d" % n))
            sh(*in_ns(ns, "ip", "link", "set", "mh%d" % n, "up"))
            sh(*in_ns(SW, "ip", "link", "set", "mh%dp" % n, "master", "br0"))
            sh(*in_ns(SW, "ip", "link", "set", "mh%dp" % n, "up"))

    def cut(self, ns):
        sh(*in_ns(ns, "ip", "link", "set", "mh%d" % HOSTS[ns], "down"))

    def down(self):
        for ns in list(HOSTS) + [SW]:
            sh("ip", "netns", "del", ns, check=False)


class Host:
    """A stack-like view of one host for IMClient (host, ports, domain)."""

    def __init__(self, ns, instance):
        self.host, self.domain = addr(ns), "localhost"
        self.c2s = {instance: (5222, 5223)}

    def port(self, instance):
        return self.c2s[instance][0]

    def tls_port(self, instance):
        return self.c2s[instance][1]


def run_in_ns(ns, coro, timeout):
    """Run a coroutine on an event loop in a thread that joined ns: every
    socket it opens lives in that namespace."""
    out = {}

    def body():
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open("/run/netns/" + ns, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                out["error"] = OSError(ctypes.get_errno(), "setns")
                return
        finally:
            os.close(fd)
        try:
            out["result"] = asyncio.run(asyncio.wait_for(coro, timeout))
        except BaseException as e:      # reported in the test's thread
            out["error"] = e
    t = threading.Thread(target=body)
    t.start()
    t.join(timeout + 10)
    assert not t.is_alive(), "client thread still running"
    if "error" in out:
        raise out["error"]
    return out.get("result")


@pytest.fixture
def cluster(stack):
    try:
        sh("ip", "netns", "add", "sbmh-probe")
        sh("ip", "netns", "del", "sbmh-probe")
    except (AssertionError, OSError) as e:
        pytest.skip("network namespaces not permitted here: %s" % e)
    d = os.path.join(stack.env["SB_VAR"], "multihost")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    os.chmod(d, 0o755)
    net, procs, logs = Net(), {}, {}
    net.up()
    redis_pw = secrets.token_hex(16)
    try:
        # --- host db: Redis and PostgreSQL on 10.213.0.1 only
        os.makedirs(os.path.join(d, "redis"))
        procs["redis"] = subprocess.Popen(
            in_ns("sbmh-db", "redis-server", "--bind", addr("sbmh-db"), "--port", "6379",
                  "--requirepass", redis_pw, "--save", "", "--appendonly", "no",
                  "--dir", os.path.join(d, "redis"), "--logfile", os.path.join(d, "redis.log")),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pg = os.path.join(d, "pg")
        os.makedirs(pg)
        shutil.chown(pg, "postgres")
        os.chmod(pg, 0o700)
        sh("runuser", "-u", "postgres", "--", PGBIN + "/initdb", "-D", pg, "-U", "postgres",
           "-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=trust", timeout=60)
        with open(os.path.join(pg, "pg_hba.conf"), "a") as f:
            f.write("host all all %s.0/24 trust\n" % NET)
        sh(*in_ns("sbmh-db", "runuser", "-u", "postgres", "--", PGBIN + "/pg_ctl", "-D", pg,
                  "-l", os.path.join(pg, "log"), "-w", "-t", "30", "-o",
                  "-c listen_addresses=%s -c port=5432 -c unix_socket_directories=%s "
                  "-c fsync=off" % (addr("sbmh-db"), pg), "start"), timeout=60)
        psql = in_ns("sbmh-db", PGBIN + "/psql", "-X", "-q", "-h", addr("sbmh-db"), "-U",
                     "postgres", "-d", "postgres", "-tAc")
        sh(*psql, "CREATE ROLE switchboard LOGIN")
        sh(*psql, "CREATE DATABASE switchboard OWNER switchboard")
        # --- one INI for all hosts: the test profile's, with the hosts' stores
        with open(os.path.join(d, "redis-password"), "w") as f:
            f.write(redis_pw + "\n")
        ini = os.path.join(d, "switchboard.ini")
        shutil.copy(stack.ini, ini)
        with open(ini, "a") as f:
            f.write("\n[cluster]\nrouters = tcp://%s:15555,tcp://%s:15555\n"
                    "redis_host = %s\nredis_port = 6379\nredis_user =\n"
                    "redis_password_file = %s\n"
                    "postgres = host=%s port=5432 dbname=switchboard user=switchboard\n"
                    "postgres_password_file =\nlog_level = info\n"
                    % (addr("sbmh-h1"), addr("sbmh-h2"), addr("sbmh-db"),
                       os.path.join(d, "redis-password"), addr("sbmh-db")))
        sbctl = [os.path.join(stack.bin, "sbctl"), "-c", ini]
        sh(*in_ns("sbmh-h1", *sbctl, "db", "migrate"), cwd=stack.root, timeout=60)
        sh(*in_ns("sbmh-h1", *sbctl, "domain", "add", "localhost"), cwd=stack.root)
        users = {}
        for u in ("alice", "bob", "carol"):
            users[u] = ("%s%s@localhost" % (u, secrets.token_hex(3)), secrets.token_urlsafe(10))
            sh(*in_ns("sbmh-h1", *sbctl, "user", "add", *users[u]), cwd=stack.root)

        # --- the two Switchboard hosts: each process on its host's address
        def start(ns, kind, name, **env):
            log = os.path.join(d, name + ".log")
            logs[name] = log
            e = dict(os.environ, **env)
            with open(log, "a") as out:
                procs[name] = subprocess.Popen(
                    in_ns(ns, os.path.join(stack.bin, "sb-" + kind), "-c", ini, "-n", name),
                    cwd=stack.root, env=e, stdout=out, stderr=subprocess.STDOUT)
        for ns, n in (("sbmh-h1", 1), ("sbmh-h2", 2)):
            a = addr(ns)
            start(ns, "router", "router%d" % n, SB_ROUTER_BIND="tcp://%s:15555" % a)
        for ns, n in (("sbmh-h1", 1), ("sbmh-h2", 2)):
            a = addr(ns)
            start(ns, "sm", "sm%d" % n, SB_SM_DIRECT_BIND="tcp://0.0.0.0:15600",
                  SB_SM_DIRECT_ADVERTISE=a)
            start(ns, "c2s", "c2s%d" % n, SB_C2S_LISTEN=a, SB_C2S_PORT="5222",
                  SB_C2S_TLS_PORT="5223")
        start("sbmh-h2", "bosh", "bosh1", SB_BOSH_LISTEN=addr("sbmh-h2"))

        def status(ns):
            p = sh(*in_ns(ns, *sbctl, "status"), check=False, cwd=stack.root)
            rows = {}
            for line in p.stdout.splitlines():
                if line.startswith(("S2S", "ROUTERS")):
                    break
                w = line.split()
                if w and w[0] != "INSTANCE":
                    rows[w[0]] = line
            return rows
        want = {"router1", "router2", "sm1", "sm2", "c2s1", "c2s2", "bosh1"}
        wait_until(lambda: want <= set(status("sbmh-h1")), 30, "the two-host cluster up")
        yield dict(net=net, procs=procs, logs=logs, users=users, status=status, dir=d)
    finally:
        for name, p in procs.items():
            if name != "redis" and p.poll() is None:
                p.terminate()
        for name, p in procs.items():
            if name != "redis":
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if os.path.exists(os.path.join(d, "pg", "postmaster.pid")):
            sh(*in_ns("sbmh-db", "runuser", "-u", "postgres", "--", PGBIN + "/pg_ctl", "-D",
                      os.path.join(d, "pg"), "-m", "immediate", "-w", "stop"), check=False)
        if "redis" in procs:
            procs["redis"].kill()
            procs["redis"].wait()
        net.down()


async def _chat(frm, to, body, timeout=5):
    frm.message(to.jid, body)
    await to.message_with(body, timeout=timeout)


async def _until_delivered(frm, to, tag, deadline):
    """Send until one arrives (an sm whose users just moved may answer an
    error for a moment); returns the number of tries."""
    tries = 0
    while True:
        tries += 1
        body = "%s %d" % (tag, tries)
        try:
            await _chat(frm, to, body, timeout=2)
            return tries
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_users_on_the_surviving_host_keep_chatting_when_a_host_goes_down(cluster):
    users, net, procs = cluster["users"], cluster["net"], cluster["procs"]
    h1, h2 = Host("sbmh-h1", "c2s1"), Host("sbmh-h2", "c2s2")
    for name in ("sm1", "sm2"):
        with open(cluster["logs"][name], errors="replace") as f:
            assert "endpoint=\"tcp://%s:15600\"" % addr("sbmh-h%s" % name[-1]) in f.read()

    async def go():
        alice = await IMClient(h1, *users["alice"], instance="c2s1").login()
        bob = await IMClient(h2, *users["bob"], instance="c2s2").login()
        carol = await IMClient(h2, *users["carol"], instance="c2s2").login()
        try:
            # across hosts, both ways, and within host 2
            await _chat(alice, bob, "h1 to h2")
            await _chat(bob, alice, "h2 to h1")
            await _chat(bob, carol, "h2 to h2")
            # host 1 goes down whole
            for name in ("router1", "sm1", "c2s1"):
                procs[name].kill()
            net.cut("sbmh-h1")
            deadline = time.monotonic() + 20
            await _until_delivered(bob, carol, "after h1 died b->c", deadline)
            await _until_delivered(carol, bob, "after h1 died c->b", deadline)
            # past host 1's leases: it is gone from the cluster...
            await asyncio.to_thread(wait_until, lambda: not ({"router1", "sm1", "c2s1"} &
                                                              set(cluster["status"]("sbmh-h2"))),
                                    15, "host 1's processes to leave the cluster")
            # ...and host 2 goes on, on the same streams (no new login)
            for i in range(3):
                await _chat(bob, carol, "steady %d" % i)
                await _chat(carol, bob, "steady back %d" % i)
            assert not bob.raw.closed and not carol.raw.closed
            # alice's session (on the dead host) is ended cluster-wide
            bob.send("<iq type='get' id='p1' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>"
                     % alice.jid)
            err = await bob.next(lambda e: e.get("id") == "p1", timeout=10, what="ping answer")
            assert err.get("type") == "error", err
        finally:
            for c in (bob, carol):
                await c.close()
            alice.abort()
    run_in_ns("sbmh-cl", go(), timeout=90)
