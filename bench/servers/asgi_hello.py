"""The http benchmark's hello page as a tiny ASGI app, for uvicorn (bench/run_http.py).

The same bytes and Content-Type as netmux's http app serves at "/".
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from netmux.apps.http import HELLO_PAGE  # noqa: E402  (one copy of the page)

_START = {"type": "http.response.start", "status": 200,
          "headers": [(b"content-type", b"text/html; charset=utf-8"),
                      (b"content-length", b"%d" % len(HELLO_PAGE))]}
_BODY = {"type": "http.response.body", "body": HELLO_PAGE}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send(_START)
    await send(_BODY)
