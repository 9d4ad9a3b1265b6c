"""The load generator of `make bench` (tests/bench/sbbench) against the test
stack: a few hundred messages between 20 users over STARTTLS + SCRAM-SHA-1,
across both front-ends. Asserts zero loss and per-sender order, never a
timing: benchmarks are not tests."""

import json
import os
import subprocess

import pytest


def test_sbbench_smoke_delivers_every_message_in_order(stack):
    sbbench = os.path.join(stack.root, "build/bench/sbbench")
    if not os.access(sbbench, os.X_OK):
        pytest.fail("build/bench/sbbench missing (make test builds it)")
    stack.sbctl("user", "bulk-add", stack.domain, "smoke", "20", "smokepw", timeout=60)
    cmd = [sbbench, "-H", stack.host, "-p", "%d,%d" % (stack.port("c2s1"), stack.port("c2s2")),
           "-d", stack.domain, "-u", "smoke", "-w", "smokepw", "--tls", "--users", "20",
           "--rates", "1000", "--step", "0.4", "--drain", "10", "--p99", "100000", "msg"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    rows = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    assert rows, "no result from sbbench: %s" % p.stderr
    r = rows[0]
    assert not r.get("setup_failed"), p.stderr
    assert r["sent"] >= 200, r
    assert r["lost"] == 0 and r["delivered"] == r["sent"], r
    assert r["reordered"] == 0 and r["gaps"] == 0, r
    assert r["errors"] == 0 and r["dropped"] == 0, r
    assert p.returncode == 0, p.stderr


def _sbbench(stack):
    sbbench = os.path.join(stack.root, "build/bench/sbbench")
    if not os.access(sbbench, os.X_OK):
        pytest.fail("build/bench/sbbench missing (make test builds it)")
    return sbbench


def _rows(p):
    rows = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    assert rows, "no result from sbbench: %s" % p.stderr
    return rows


def test_sbbench_smoke_with_stream_management_on_every_client(stack):
    """--sm: every client enables XEP-0198, answers the server's <r/> and asks
    with its own every 3 stanzas; nothing lost, nothing out of order."""
    stack.sbctl("user", "bulk-add", stack.domain, "smoke", "20", "smokepw", timeout=60)
    cmd = [_sbbench(stack), "-H", stack.host, "-p",
           "%d,%d" % (stack.port("c2s1"), stack.port("c2s2")), "-d", stack.domain,
           "-u", "smoke", "-w", "smokepw", "--tls", "--users", "20", "--sm",
           "--sm-ack-every", "3", "--rates", "1000", "--step", "0.4", "--drain", "10",
           "--p99", "100000", "msg"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    r = _rows(p)[0]
    assert not r.get("setup_failed"), p.stderr
    assert r["sm"] == 1 and r["sent"] >= 200, r
    assert r["lost"] == 0 and r["delivered"] == r["sent"], r
    assert r["reordered"] == 0 and r["errors"] == 0 and r["dropped"] == 0, r
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("transport", ["ws", "bosh"])
def test_sbbench_smoke_idle_over_web_transports(stack, transport):
    """idle --transport ws|bosh against sb-bosh: a handful of users log in
    over WebSocket (RFC 7395, masked client frames) or BOSH (XEP-0206,
    hold=1), send presence and are held; none fails, none is dropped."""
    stack.sbctl("user", "bulk-add", stack.domain, "webidle", "6", "webidlepw", timeout=60)
    cmd = [_sbbench(stack), "-H", stack.host, "-p", stack.env["SB_BOSH_PORT"],
           "-d", stack.domain, "-u", "webidle", "-w", "webidlepw", "--transport", transport,
           "--users", "6", "--hold", "3", "--login-timeout", "20", "idle"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    r = _rows(p)[0]
    assert r["transport"] == transport, r
    assert r["online"] == 6 and r["failed"] == 0, (r, p.stderr)
    assert r["dropped"] == 0 and r["held_s"] == 3, (r, p.stderr)
    assert p.returncode == 0, p.stderr


def test_sbbench_smoke_resumption_storm(stack):
    """resume: 20 resumable sessions on c2s1, which sbbench kills; all of them
    resume on c2s2 and get what was sent before, during and after, once."""
    stack.sbctl("user", "bulk-add", stack.domain, "smres", "24", "smrespw", timeout=60)
    stack.wait_instances(present=("c2s1", "c2s2"))
    pid = int(open(os.path.join(stack.env["SB_VAR"], "pid", "c2s1.pid")).read().split()[0])
    cmd = [_sbbench(stack), "-H", stack.host, "-p",
           "%d,%d" % (stack.port("c2s1"), stack.port("c2s2")), "-d", stack.domain,
           "-u", "smres", "-w", "smrespw", "--tls", "--users", "20", "--senders", "4",
           "--before", "4", "--dead", "3", "--kill", str(pid), "--drain", "10",
           "--settle", "0.5", "resume"]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=90)
    finally:
        stack.stack("start-proc", "c2s1")
        stack.stack("wait-ready")
    r = _rows(p)[0]
    assert not r.get("setup_failed"), p.stderr
    assert r["resumed"] == 20 and r["resume_failed"] == 0, r
    assert r["sent"] == 20 * 8 and r["delivered"] == r["sent"] and r["lost"] == 0, r
    assert r["duplicates"] == 0 and r["reordered"] == 0 and r["errors"] == 0, r
    assert p.returncode == 0, p.stderr


def _bench_script(stack, name, *args, env=None, timeout=120):
    p = subprocess.run(["/usr/bin/python3", os.path.join(stack.root, "tests/bench", name), *args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, env=dict(os.environ, **(env or {})))
    assert p.returncode == 0, p.stderr[-2000:]
    return [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]


def test_mam_bench_smoke_generates_an_archive_and_times_every_kind(stack):
    """mamq (tests/bench/mam_bench.py) at a tiny size: the rows are generated
    (indexes dropped and built again in one transaction), the heavy user's
    RSM count is exactly what was generated, every kind of query answers."""
    before = set(_psql_lines(stack, "SELECT indexdef FROM pg_indexes WHERE tablename = 'archive'"))
    rows = _bench_script(stack, "mam_bench.py", "--profile", "test",
                         env={"MAM_ROWS": "3000", "MAM_USERS": "10", "MAM_HEAVY": "500",
                              "MAM_QUERIES": "2"})
    r = rows[-1]
    assert r["scenario"] == "mamq" and r["generated"] == 3000 and r["archive_rows"] >= 3000, r
    assert set(r["kinds"]) == {"last page (max 50)", "page after an id", "with filter, last page",
                               "full-text word", "full-text 2 words"}, r
    assert all(v["p50_ms"] > 0 for v in r["kinds"].values()), r
    after = set(_psql_lines(stack, "SELECT indexdef FROM pg_indexes WHERE tablename = 'archive'"))
    assert after == before                  # every index is back, as it was


def test_carbons_cpu_smoke_copies_every_message(stack):
    """carbons (tests/bench/carbons_cpu.py) at a tiny size: with carbons on,
    the second resource got a copy of every message (the script exits
    non-zero otherwise); a summary line with both medians."""
    rows = _bench_script(stack, "carbons_cpu.py", "--profile", "test", "20")
    runs = [r for r in rows if "carbons" in r]
    assert len(runs) == 6 and all(r["copies"] == (20 if r["carbons"] else 0) for r in runs), rows
    s = rows[-1]
    assert s["summary"] and s["off_us"] > 0 and s["on_us"] > 0, s


def _psql_lines(stack, sql):
    import sys
    sys.path.insert(0, os.path.join(stack.root, "tests/bench"))
    from mam_bench import psql
    return psql(stack.env, sql).splitlines()


def _fanout(stack, prefix, n, args, scenario, timeout=90):
    stack.sbctl("user", "bulk-add", stack.domain, prefix, str(n), prefix + "pw", timeout=60)
    cmd = [_sbbench(stack), "-H", stack.host, "-p",
           "%d,%d" % (stack.port("c2s1"), stack.port("c2s2")), "-d", stack.domain,
           "-u", prefix, "-w", prefix + "pw", "--tls", "--users", str(n), *args, scenario]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    r = _rows(p)[0]
    assert not r.get("setup_failed"), (r, p.stderr)
    return r, p


def test_sbbench_smoke_muc_fanout(stack):
    """muc: 8 occupants of one room on sb-muc, 2 of them sending; every
    occupant gets every message (the sender its echo too)."""
    import secrets
    room = "fan%s@conference.%s" % (secrets.token_hex(3), stack.domain)
    r, p = _fanout(stack, "mucfan", 8, ["--senders", "2", "--rates", "20", "--step", "1",
                                        "--drain", "10", "--room", room], "muc")
    assert r["receivers"] == 8 and r["sent"] >= 10, r
    assert r["delivered"] == r["expected"] == r["sent"] * 8, r
    assert r["errors"] == 0 and r["dropped"] == 0 and p.returncode == 0, (r, p.stderr)


def test_sbbench_smoke_pep_fanout(stack):
    """pep: one publisher, 6 contacts (roster rows written by fanout_setup)
    whose caps ask for tune+notify: every tune reaches every contact."""
    import sys
    sys.path.insert(0, os.path.join(stack.root, "tests", "bench"))
    from fanout_setup import pep_roster_sql
    from test_sbctl import psql
    stack.sbctl("user", "bulk-add", stack.domain, "pepfan", "7", "pepfanpw", timeout=60)
    psql(stack, pep_roster_sql(stack.domain, "pepfan", 1, 7))
    r, p = _fanout(stack, "pepfan", 7, ["--rates", "10", "--step", "1", "--drain", "10"], "pep")
    assert r["receivers"] == 6 and r["sent"] >= 5, r
    assert r["delivered"] == r["expected"] == r["sent"] * 6, r
    assert r["errors"] == 0 and r["dropped"] == 0 and p.returncode == 0, (r, p.stderr)


# ---- GEN=tsung: the harness of tests/bench/tsung_gen.py with Debian's tsung --------

TSUNG_C2S = "c2s8"


@pytest.fixture
def plain_c2s(stack):
    """An extra front-end that offers PLAIN without TLS on loopback (tsung has
    no SCRAM and the bench profile sets allow_plain_without_tls; the test
    profile does not)."""
    import signal
    import socket
    import time

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    port, tls_port = free_port(), free_port()
    env = dict(os.environ, SB_C2S_PORT=str(port), SB_C2S_TLS_PORT=str(tls_port),
               SB_C2S_ALLOW_PLAIN_WITHOUT_TLS="1")
    log = open(os.path.join(stack.env.get("SB_VAR", os.path.join(stack.root, "var/test")),
                            "log", TSUNG_C2S + ".log"), "ab")
    proc = subprocess.Popen([os.path.join(stack.bin, "sb-c2s"), "-c", stack.ini, "-n", TSUNG_C2S],
                            cwd=stack.root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        stack.wait_instances(present=[TSUNG_C2S], timeout=15)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "%s not accepting" % TSUNG_C2S
                time.sleep(0.1)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_tsung_smoke_chat_between_five_users(stack, plain_c2s, tmp_path):
    """tsung (deploy/dev/packages.txt) logs 5 users in with PLAIN, they chat
    with stamped bodies to random online users; tsung's own counts say every
    login finished, every send happened and stamped messages came back."""
    import sys
    sys.path.insert(0, os.path.join(stack.root, "tests/bench"))
    import tsung_gen
    if not os.access(tsung_gen.TSUNG, os.X_OK):
        pytest.fail("tsung missing (deploy/dev/packages.txt lists it)")
    stack.sbctl("user", "bulk-add", stack.domain, "tsg", "5", "tsgpw", timeout=60)

    class Target:
        name = "smoke"
        ports = [plain_c2s]

        def watches(self):
            return []
    r = tsung_gen.run_step(Target(), rate=20, users=5, secs=2, arrival=50, drain=2,
                           workdir=str(tmp_path), domain=stack.domain, prefix="tsg",
                           passprefix="tsgpw", step_no=0)
    assert "error" not in r, r
    assert r["errors"] == {}, r
    assert r["users"] == 5, r
    assert r["sent"] == 5 * 8, r           # 2 s at 20/s in total: 8 sends each
    assert 0 < r["delivered_tsung"] <= r["sent"], r
    assert r["p50_ms"] is not None, r


def test_sbbench_smoke_chaos_over_stream_management(stack):
    """chaos, very short: 20 XEP-0198 clients chat for 20 s while c2s1 is
    SIGKILLed and started again; the generator resumes, re-sends what was
    not acknowledged and at the end looks for what is missing in offline
    storage and the archive. Checked: it runs and every message is counted
    exactly once. Not asserted: lost == 0 — whether a message is in flight
    at the kill depends on timing, so a zero here would be luck rather than
    a property the test pins down (make bench measures it)."""
    import threading
    import time
    stack.sbctl("user", "bulk-add", stack.domain, "smch", "20", "smchpw", timeout=60)
    stack.wait_instances(present=("c2s1", "c2s2"))
    cmd = [_sbbench(stack), "-H", stack.host, "-p",
           "%d,%d" % (stack.port("c2s1"), stack.port("c2s2")), "-d", stack.domain,
           "-u", "smch", "-w", "smchpw", "--tls", "--users", "20", "--rates", "50",
           "--duration", "20", "--drain", "15", "--sm", "--check", "chaos"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = []
    online = threading.Event()

    def relay():
        for line in p.stderr:
            err.append(line)
            if "users online;" in line:
                online.set()
    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    try:
        assert online.wait(60), "".join(err)
        time.sleep(6)                  # a few seconds of chat, then the fault
        stack.stack("kill-proc", "c2s1")
        time.sleep(1)
        stack.stack("start-proc", "c2s1")
        out, rest = p.communicate(timeout=120)
        err.append(rest or "")         # what communicate read of stderr, not the relay
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        stack.stack("start-proc", "c2s1")
        stack.stack("wait-ready")
    reader.join(10)                    # all of stderr, for the messages below
    rows = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    assert rows, "no result from sbbench (exit %s): %s" % (p.returncode, "".join(err))
    r = rows[0]
    assert not r.get("setup_failed"), "".join(err)
    assert r["sm"] == 1 and r["check"] == 1 and r["sent"] > 500, r
    assert r["drops"] > 0, r           # the kill was felt
    assert (r["delivered"] + r["bounced_error"] + r["archived_only"] + r["lost"]
            + r["unacked_at_end"]) == r["sent"], r
    assert p.returncode == 0, "".join(err)


def test_logins_smoke_every_mechanism_logs_in(stack):
    """logins (tests/bench/logins.py) at a tiny size on c2s1: PLAIN, SCRAM-SHA-1,
    SCRAM-SHA-256, SCRAM-SHA-256-PLUS, X-OAUTH2 with own tokens, OAUTHBEARER
    with a JWT, LDAP (a private slapd), extauth and FAST each complete every
    login of a short step, with no failure; no timing is asserted."""
    rows = _bench_script(stack, "logins.py", "--profile", "test", timeout=300,
                         env={"LOGINS_USERS": "5", "LOGINS_RATES": "10", "LOGINS_STEP": "1",
                              "LOGINS_WARMUP": "0"})
    sums = {r["mechanism"]: r for r in rows if r.get("scenario") == "logins"}
    assert len(sums) == 9, sorted(sums)
    for name, s in sums.items():
        assert not s["setup_failed"] and s["errors"] == 0, (name, s)
        assert s["completed"] >= 8, (name, s)      # 10/s for 1 s
    steps = [r for r in rows if r.get("scenario") == "login" and "mechanism" in r]
    assert {r["mech"] for r in steps} == {"PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256",
                                          "SCRAM-SHA-256-PLUS", "X-OAUTH2", "OAUTHBEARER",
                                          "HT-SHA-256-NONE"}, steps
