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
