"""Redis and PostgreSQL as operators run them: the private stores of the
stack require passwords (generated per profile, given to every process as
redis_password_file / postgres_password_file), a client without them is
refused, and a process given a wrong Redis password says so once and keeps
retrying with back-off instead of flooding the log or giving up. Restarts
of either store are covered by test_outage.py, with these passwords."""

import os
import subprocess

from xmpptest import close, login, next_message, redis_cli, run, wait_until


def _acl_log_count(stack, user):
    """Failed logins Redis counted for `user` (ACL LOG)."""
    out = redis_cli(stack, "ACL", "LOG").splitlines()
    total = 0
    for i, line in enumerate(out):
        if line == "username" and i + 1 < len(out) and out[i + 1] == user:
            # entries are flat key/value lines; count comes first
            for j in range(i, -1, -1):
                if out[j] == "count":
                    total += int(out[j + 1])
                    break
    return total


def test_private_redis_refuses_a_client_without_the_password(stack):
    p = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", stack.env["SB_REDIS_PORT"], "ping"],
                       capture_output=True, text=True, timeout=10)
    assert "NOAUTH" in p.stdout + p.stderr, p.stdout + p.stderr
    assert redis_cli(stack, "ping") == "PONG"


def test_private_postgres_refuses_the_app_role_without_its_password(stack):
    base = ["psql", "-X", "-w", "-h", "127.0.0.1", "-p", stack.env["SB_PG_PORT"], "-U",
            "switchboard", "-d", "switchboard", "-tAc", "SELECT 1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSFILE"] = "/dev/null"
    p = subprocess.run(base, env=env, capture_output=True, text=True, timeout=10)
    assert p.returncode != 0 and "password" in p.stderr, (p.returncode, p.stderr)
    with open(stack.env["SB_PG_PASSWORD_FILE"]) as f:
        env["PGPASSWORD"] = f.read().strip()
    p = subprocess.run(base, env=env, capture_output=True, text=True, timeout=10)
    assert p.stdout.strip() == "1", p.stderr


def test_the_cluster_works_with_both_passwords(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        a = await login(stack, a_jid, a_pw, instance="c2s1")
        b = await login(stack, b_jid, b_pw, instance="c2s2")
        try:
            a.send_message(mto=b_jid, mbody="through authenticated stores", mtype="chat")
            await next_message(b, body="through authenticated stores", timeout=10)
        finally:
            await close(a)
            await close(b)
    run(go(), timeout=40)


def test_a_wrong_redis_password_is_logged_once_and_retried(stack, tmp_path):
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    log = tmp_path / "sm3.log"
    before = _acl_log_count(stack, "switchboard")
    # Kept off the cluster (no router), so it cannot take users from sm1/sm2.
    env = dict(os.environ, SB_CLUSTER_REDIS_PASSWORD_FILE=str(wrong),
               SB_CLUSTER_ROUTERS="tcp://127.0.0.1:9", SB_CLUSTER_ROUTER_WAIT="60")
    with open(log, "w") as out:
        p = subprocess.Popen([os.path.join(stack.bin, "sb-sm"), "-c", stack.ini, "-n", "sm3"],
                             cwd=stack.root, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "event=redis_auth_failed" in log.read_text(), 10,
                   "sm3 to log the refused Redis login")
        # it keeps trying (Redis counts the failures) without a line per try
        wait_until(lambda: _acl_log_count(stack, "switchboard") >= before + 3, 15,
                   "sm3 to retry its Redis login")
        assert log.read_text().count("event=redis_auth_failed") == 1, log.read_text()[-2000:]
        assert p.poll() is None
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
