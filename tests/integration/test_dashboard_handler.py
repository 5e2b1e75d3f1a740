"""The dashboard function as Lambda runs it: the page, its assets, and a Request-Id on each answer."""


def _get(handler, asset=None, etag=None):
    event = {
        "resource": "/dashboard/{asset}" if asset else "/dashboard",
        "path": f"/dashboard/{asset}" if asset else "/dashboard",
        "httpMethod": "GET",
        "headers": {"If-None-Match": etag} if etag else {},
        "pathParameters": {"asset": asset} if asset else None,
    }
    return handler("DashboardFunction", event)


def test_page_assets_and_misses_carry_a_request_id(aws, handler):
    page = _get(handler)
    assert page["statusCode"] == 200 and "<html" in page["body"].lower()
    again = _get(handler, etag=page["headers"]["ETag"])
    assert again["statusCode"] == 304
    missing = _get(handler, "nothing.js")
    assert missing["statusCode"] == 404 and "resource_missing" in missing["body"]
    ids = {r["headers"]["Request-Id"] for r in (page, again, missing)}
    assert len(ids) == 3 and all(i.startswith("req_") for i in ids)
