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
