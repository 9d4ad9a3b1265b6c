"""Prometheus metrics: every process of the stack serves /metrics (README,
"Metrics"). A real Prometheus (Debian's `prometheus`) scrapes them all and
its query API shows the counters move when two users chat; `promtool check
metrics` accepts every endpoint; `sbctl metrics` prints what the endpoint
serves; a metrics port already taken costs one log line, not the process."""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

from xmpptest import close, login, next_message, run, wait_until

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def targets(stack):
    """instance name → metrics port, from `stack.sh env`."""
    names = stack.env.get("SB_METRICS_PROCS", "").split()
    out = {n: int(stack.env["SB_%s_METRICS_PORT" % n.upper()]) for n in names
           if stack.env.get("SB_%s_METRICS_PORT" % n.upper())}
    if not out:
        pytest.fail("stack.sh env names no metrics ports (SB_<NAME>_METRICS_PORT)")
    return out


def scrape(port, timeout=5):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=timeout) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def sample(text, name, labels=""):
    """The value of one series in an exposition body (None if absent)."""
    want = name + ("{%s}" % labels if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return None


# ------------------------------------------------------------------ Prometheus
@pytest.fixture(scope="module")
def prometheus(stack):
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail("%s missing: install the prometheus package (deploy/dev/packages.txt)"
                    % PROMETHEUS)
    tmp = tempfile.mkdtemp(prefix="sb-prom-")
    port = free_port()
    conf = os.path.join(tmp, "prometheus.yml")
    lines = ["global:", "  scrape_interval: 1s", "  scrape_timeout: 1s", "scrape_configs:"]
    for name, mport in sorted(targets(stack).items()):
        # job = the process kind; the instance label is the process name
        kind = name.rstrip("0123456789")
        lines += ["  - job_name: '%s'" % name,
                  "    static_configs:",
                  "      - targets: ['127.0.0.1:%d']" % mport,
                  "        labels: {kind: '%s', sb: '%s'}" % (kind, name)]
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    log = open(os.path.join(tmp, "prometheus.log"), "wb")
    proc = subprocess.Popen([PROMETHEUS, "--config.file=" + conf,
                             "--storage.tsdb.path=" + os.path.join(tmp, "data"),
                             "--web.listen-address=127.0.0.1:%d" % port,
                             "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT)
    api = "http://127.0.0.1:%d/api/v1/" % port
    try:
        yield api
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def api_get(api, path, **params):
    url = api + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            data = json.loads(r.read().decode())
    except OSError:
        return None
    return data.get("data") if data.get("status") == "success" else None


def query(api, expr):
    """Instant query → {sb label: value}."""
    res = api_get(api, "query", query=expr)
    if res is None:
        return {}
    return {r["metric"].get("sb", ""): float(r["value"][1]) for r in res["result"]}


def test_prometheus_scrapes_every_process_and_sees_a_chat(stack, prometheus, two_users):
    names = set(targets(stack))
    assert {"router1", "router2", "sm1", "sm2", "c2s1", "c2s2", "bosh1", "s2s1"} <= names

    def all_up():
        up = query(prometheus, "up")
        return set(up) >= names and all(up[n] == 1 for n in names)
    wait_until(all_up, 30, "every target up in Prometheus (last: %s)" % query(prometheus, "up"),
               interval=0.5)

    def current(expr):
        return query(prometheus, expr)

    # the first scrapes: baselines taken from the same series we check after
    c2s_in = 'sum by (sb) (sb_stanzas_in_total{kind="c2s",type="message"})'
    c2s_out = 'sum by (sb) (sb_stanzas_out_total{kind="c2s",type="message"})'
    sm_in = 'sum(sb_stanzas_in_total{kind="sm",type="message"})'
    auth = 'sum(sb_auth_total{result="success"})'
    routed = 'sum(sb_router_envelopes_routed_total)'
    sessions = 'sum(sb_sessions{kind="c2s"})'
    before = {e: current(e) for e in (c2s_in, c2s_out, sm_in, auth, routed)}

    (a_jid, a_pw), (b_jid, b_pw) = two_users
    n = 3

    async def chat():
        alice = await login(stack, a_jid, a_pw, instance="c2s1")
        bob = await login(stack, b_jid, b_pw, instance="c2s2")
        try:
            for i in range(n):
                text = "metrics %d %s" % (i, secrets.token_hex(4))
                alice.send_message(mto=bob.boundjid.full, mbody=text, mtype="chat")
                await next_message(bob, body=text)
                text = "back %d %s" % (i, secrets.token_hex(4))
                bob.send_message(mto=alice.boundjid.full, mbody=text, mtype="chat")
                await next_message(alice, body=text)
            # while both are bound, Prometheus sees two c2s sessions
            import asyncio
            deadline = time.monotonic() + 15
            while current(sessions).get("", 0) < 2:
                assert time.monotonic() < deadline, "sb_sessions never reached 2"
                await asyncio.sleep(0.5)
        finally:
            await close(alice)
            await close(bob)
    run(chat(), timeout=60)

    def grew(expr, by, who=None):
        now, was = current(expr), before[expr]
        key = who if who is not None else ""
        return now.get(key, 0) - was.get(key, 0) >= by

    wait_until(lambda: grew(c2s_in, n, "c2s1") and grew(c2s_in, n, "c2s2"), 15,
               "c2s message counters in (%s → %s)" % (before[c2s_in], current(c2s_in)),
               interval=0.5)
    wait_until(lambda: grew(c2s_out, n, "c2s1") and grew(c2s_out, n, "c2s2"), 15,
               "c2s message counters out (%s → %s)" % (before[c2s_out], current(c2s_out)),
               interval=0.5)
    wait_until(lambda: grew(sm_in, 2 * n), 15,
               "sm message counters (%s → %s)" % (before[sm_in], current(sm_in)), interval=0.5)
    wait_until(lambda: grew(auth, 2), 15, "auth successes (%s → %s)" % (before[auth],
                                                                       current(auth)),
               interval=0.5)
    wait_until(lambda: grew(routed, 1), 15, "router envelopes", interval=0.5)
    # histograms and process metrics are there for every process
    assert len(current("sb_process_resident_memory_bytes > 0")) == len(names)
    assert len(current("sb_process_cpu_seconds_total")) == len(names)
    assert current('sum(sb_sm_job_seconds_count)').get("", 0) >= 2 * n
    assert current('sum(sb_redis_round_trip_seconds_count)').get("", 0) > 0
    assert current('sum(sb_pg_round_trip_seconds_count)').get("", 0) > 0
    assert current('sum(sb_router_hop_seconds_count)').get("", 0) > 0


# ------------------------------------------------------------------ promtool
def test_promtool_accepts_every_endpoint(stack):
    if not os.access(PROMTOOL, os.X_OK):
        pytest.fail("%s missing: install the prometheus package" % PROMTOOL)
    for name, port in sorted(targets(stack).items()):
        body = scrape(port)
        assert "# TYPE sb_process_cpu_seconds_total counter" in body, name
        for line in body.splitlines():
            if line and not line.startswith("#"):
                assert line.startswith("sb_"), (name, line)
                assert "instance=" not in line, (name, line)
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True,
                           text=True, timeout=20)
        assert p.returncode == 0, "%s: promtool: %s%s" % (name, p.stdout, p.stderr)


def test_metrics_endpoint_only_serves_metrics(stack):
    port = targets(stack)["c2s1"]
    for path, status in (("/", 404), ("/metricsx", 404)):
        try:
            urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5)
            raise AssertionError("%s answered 200" % path)
        except urllib.error.HTTPError as e:
            assert e.code == status


def test_sbctl_metrics_prints_the_instance_endpoint(stack):
    port = targets(stack)["sm1"]
    p = stack.sbctl("metrics", "sm1", timeout=15)
    direct = scrape(port)
    # the same families, and the counters that do not move by themselves
    fams = lambda t: sorted(l for l in t.splitlines() if l.startswith("# TYPE"))  # noqa: E731
    assert fams(p.stdout) == fams(direct)
    assert sample(p.stdout, "sb_sm_queue_refused_total") == \
        sample(direct, "sb_sm_queue_refused_total")
    unknown = stack.sbctl("metrics", "nosuch9", check=False)
    assert unknown.returncode != 0 and "nosuch9" in unknown.stderr


# ------------------------------------------------------------------ port in use
def test_metrics_port_in_use_is_one_log_line_and_xmpp_still_works(stack, new_user):
    instance = "c2s8"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    mport = taken.getsockname()[1]
    port, tls_port = free_port(), free_port()
    env = dict(os.environ, SB_C2S_PORT=str(port), SB_C2S_TLS_PORT=str(tls_port),
               SB_C2S_METRICS="127.0.0.1:%d" % mport)
    logpath = os.path.join(stack.env.get("SB_VAR", os.path.join(stack.root, "var/test")),
                           "log", instance + ".log")
    start = os.path.getsize(logpath) if os.path.exists(logpath) else 0
    log = open(logpath, "ab")
    proc = subprocess.Popen([os.path.join(stack.bin, "sb-c2s"), "-c", stack.ini, "-n", instance],
                            cwd=stack.root, env=env, stdout=log, stderr=subprocess.STDOUT)
    stack.c2s[instance] = (port, tls_port)
    try:
        stack.wait_instances(present=[instance], timeout=15)
        jid, pw = new_user("mxp")

        async def go():
            deadline = time.monotonic() + 15
            while True:     # accepting starts once its domains are loaded
                try:
                    xmpp = await login(stack, jid, pw, instance=instance, timeout=10)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    import asyncio
                    await asyncio.sleep(0.2)
            try:
                xmpp.send_message(mto=xmpp.boundjid.full, mbody="self", mtype="chat")
                await next_message(xmpp, body="self")
            finally:
                await close(xmpp)
        run(go(), timeout=40)
        assert proc.poll() is None, "the c2s exited"
        with open(logpath, "rb") as f:
            f.seek(start)
            lines = [l.decode(errors="replace") for l in f.read().splitlines()]
        failed = [l for l in lines if "event=metrics_listen_failed" in l]
        assert len(failed) == 1, lines
        assert "inst=%s" % instance in failed[0]
        assert str(mport) in failed[0] and "error=" in failed[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        taken.close()
        del stack.c2s[instance]
