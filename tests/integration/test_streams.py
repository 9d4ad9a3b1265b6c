"""Stream-level errors: malformed XML, unknown hosts."""

import pytest

from xmpptest import RawStream, run, stream_error_condition, describe


@pytest.mark.parametrize("after_auth", [False, True], ids=["before-auth", "after-auth"])
def test_malformed_xml_gets_not_well_formed_and_next_login_works(stack, new_user, after_auth):
    jid, password = new_user()

    async def go():
        s = RawStream(stack, direct_tls=True)
        try:
            if after_auth:
                await s.login(jid, password)
            else:
                await s.connect()
                s.open_stream()
                await s.features()
            s.send("<message to='x@localhost'><body>oops</message>")
            err = await s.element()
            assert stream_error_condition(err) == "not-well-formed", describe(err)
            await s.wait_closed()
            assert s.closed
        finally:
            await s.close()

        again = RawStream(stack, direct_tls=True)
        try:
            full = await again.login(jid, password)
            assert full.startswith(jid + "/")
        finally:
            await again.close()
    run(go())


def test_stream_to_unknown_host_gets_host_unknown(stack):
    async def go():
        s = RawStream(stack, direct_tls=True, to="no-such-host.example")
        try:
            await s.connect()
            s.open_stream()
            err = await s.element()
            assert stream_error_condition(err) == "host-unknown", describe(err)
            await s.wait_closed()
            assert s.closed
        finally:
            await s.close()
    run(go())
