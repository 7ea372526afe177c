"""Whatever arrives at Meta's callback routes, the answer is never a 500.

A property test (hypothesis) against a real server on loopback and the real PostgreSQL:
arbitrary form fields, arbitrary bodies, and -- the part a random string never reaches --
correctly signed payloads of arbitrary JSON, so the checks after the signature are explored
too.  The server runs on the test's event loop; hypothesis sends its requests from a worker
thread with a blocking client.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.factories import make_settings
from tests.meta_requests import PUBLIC_URL, SECRET, signed
from tests.test_web_routes import serving

DEAUTHORIZE = "/api/v1/instagram/deauthorize"
DELETION = "/api/v1/instagram/data-deletion"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
# The fields Meta sends, each right, near-right or anything at all.
payloads = st.fixed_dictionaries(
    {},
    optional={
        "algorithm": st.sampled_from(["HMAC-SHA256", "hmac-sha256", "HMAC-SHA1", ""]) | json_values,
        "issued_at": st.integers(-(2**70), 2**70)
        | st.builds(lambda d: int(time.time()) + d, st.integers(-7200, 7200))
        | json_values,
        "user_id": st.text(max_size=120) | st.integers() | json_values,
        "extra": json_values,
    },
)
signed_requests = (
    st.text(max_size=300)
    | st.builds(
        lambda a, b, dots: a + "." * dots + b,
        st.text(BASE64URL + "=", max_size=60),
        st.text(BASE64URL + "=.", max_size=200),
        st.integers(0, 3),
    )
    | payloads.map(lambda p: signed(json.dumps(p).encode()))
    | st.binary(max_size=200).map(signed)
)


def status_of(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=FORM if method == "POST" else {})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("Content-Type", "")
    finally:
        conn.close()


async def test_no_input_gets_a_500(fresh_dsn: str) -> None:
    settings = make_settings(fresh_dsn, instagram_app_secret=SECRET, public_url=PUBLIC_URL)

    @hypothesis_settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        path=st.sampled_from([DEAUTHORIZE, DELETION]),
        field=signed_requests,
        raw=st.none() | st.binary(max_size=300),
        code=st.text(max_size=40),
    )
    def never_500(port: int, path: str, field: str, raw: bytes | None, code: str) -> None:
        body = raw if raw is not None else urlencode({"signed_request": field}).encode()
        status, kind = status_of(port, "POST", path, body)
        assert status in (200, 400), (status, field, raw)
        assert kind.startswith("application/json" if status == 200 else "application/problem")
        status, _ = status_of(port, "GET", f"{DELETION}/{quote(code, safe='')}")
        assert status in (200, 404), code

    async with serving(settings) as client:
        port = client.server.port
        assert port is not None
        await asyncio.to_thread(lambda: never_500(port))  # type: ignore[call-arg]
