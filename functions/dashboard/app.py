"""The usage dashboard: GET /dashboard (the page) and GET /dashboard/{asset} (its static files).

No authorizer runs on these routes: the page holds no data. The person signs in inside the
page with a secret key, which the page keeps in the tab's sessionStorage and sends only as
`Authorization: Bearer <key>` to this service's own /v1 and /v2 routes.

Files are read once per container from `static/` (the page's own sources) and
`static/vendor/` (uPlot and its license, copied from the npm registry by
`make dashboard-assets`). Standard library only, so a cold start stays small.
"""

import hashlib
import json
import secrets
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
# The page talks to its own origin only; uPlot sets styles through the CSSOM, not inline markup.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _load() -> dict[str, tuple[bytes, str, str]]:
    """name -> (content, content type, etag) for every servable file (vendor files flattened)."""
    files = {}
    for folder in (STATIC, STATIC / "vendor"):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix in TYPES:
                data = path.read_bytes()
                etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
                files[path.name] = (data, TYPES[path.suffix], etag)
    return files


FILES = _load()


def _not_found(message: str) -> dict:
    body = {"error": {"type": "invalid_request_error", "code": "resource_missing", "message": message}}
    return {
        "statusCode": 404,
        "headers": {"Content-Type": "application/json", **SECURITY_HEADERS},
        "body": json.dumps(body),
    }


def _header(event: dict, name: str) -> str | None:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return value
    return None


def lambda_handler(event: dict, context) -> dict:
    response = _serve(event)
    response["headers"]["Request-Id"] = "req_" + secrets.token_hex(8)  # like every API answer
    return response


def _serve(event: dict) -> dict:
    asset = (event.get("pathParameters") or {}).get("asset")
    name = asset or "index.html"
    if name not in FILES:
        if asset and asset.startswith("uPlot"):
            return _not_found(f"Dashboard asset {asset} is not installed: run `make dashboard-assets`.")
        return _not_found(f"No such dashboard asset: '{name}'")
    data, content_type, etag = FILES[name]
    headers = {
        "Content-Type": content_type,
        "ETag": etag,
        # The page itself is revalidated every time; assets are cached briefly and revalidated by ETag.
        "Cache-Control": "no-cache" if asset is None else "public, max-age=300",
        **SECURITY_HEADERS,
    }
    if _header(event, "if-none-match") == etag:
        return {"statusCode": 304, "headers": headers, "body": ""}
    return {"statusCode": 200, "headers": headers, "body": data.decode("utf-8")}
