"""Schemathesis hooks of tests/schema.sh: the credentials of the API schema check.

Loaded through SCHEMATHESIS_HOOKS. One auth provider serves both listeners:

- `/admin/*` (the admin listener): the admin token from AUTHGATE_ADMIN_TOKEN;
- the `/auth/*` endpoints that take an access token: a fresh login of the check's own user
  (SCHEMA_USER / SCHEMA_PASSWORD) on SCHEMA_GATEWAY_URL. Schemathesis logs in again after
  any 401 (its reactive re-authentication), so a session that a generated logout,
  logout-all or delete ended is replaced by a new one and the protected endpoints keep
  being exercised with a live session, not only refused.

Generated logins and refreshes almost never carry a live credential, so their 200 answers
(the token pair) would go unchecked: every third JSON login is sent with the real username
and password, and every third refresh with the refresh token of a fresh login.

The login goes through X-Forwarded-For 10.77.0.1 (127.0.0.1 is a trusted proxy in the
check's config), so the failed logins Schemathesis generates from 127.0.0.1 never count
toward this client's lock-out or login flood guard.
"""

import itertools
import json
import os
import urllib.request

import schemathesis

GATEWAY = os.environ["SCHEMA_GATEWAY_URL"]
ADMIN_TOKEN = os.environ["AUTHGATE_ADMIN_TOKEN"]
USER = os.environ["SCHEMA_USER"]
PASSWORD = os.environ["SCHEMA_PASSWORD"]


def _key(case, ctx):
    return "admin" if ctx.operation.path.startswith("/admin/") else "user"


def _pair():
    body = json.dumps({"username": USER, "password": PASSWORD}).encode()
    req = urllib.request.Request(
        GATEWAY + "/auth/login",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Platform": "web",
            "X-Forwarded-For": "10.77.0.1",
        },
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def _login():
    return _pair()["access_token"]


_turn = itertools.count()


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    op = case.operation
    if op.method.upper() != "POST" or not isinstance(case.body, dict):
        return
    if case.media_type != "application/json":
        return
    if op.path == "/auth/login" and next(_turn) % 3 == 0:
        case.body = {**case.body, "username": USER, "password": PASSWORD}
    elif op.path == "/auth/refresh" and next(_turn) % 3 == 0:
        case.body = {**case.body, "refresh_token": _pair()["refresh_token"]}


# Only the operations that need a token; the others (login, refresh, captcha, the JWKS,
# /healthz...) are sent as generated.
@schemathesis.auth(cache_by_key=_key, refresh_interval=3600).apply_to(
    path_regex=r"^/(admin/|auth/(logout|logout-all|sessions|verify)\b)"
)
class GatewayAuth:
    def get(self, case, ctx):
        if _key(case, ctx) == "admin":
            return ADMIN_TOKEN
        return _login()

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
