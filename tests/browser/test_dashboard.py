"""The usage dashboard in headless Chromium against `metering-local serve`.

The page is driven as a person would use it (forms, buttons, links, the keyboard); what it
shows is read back from the DOM and from the chart's own data. Screenshots of every view
go to docs/screenshots/ under `make screenshots`, to a temporary folder otherwise.
"""

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
import requests
import stripe
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser.conftest import MEASURED
from tests.browser.pages import Dashboard

KEY_A, KEY_B = "sk_test_contract_a", "sk_test_contract_b"
HOUR, DAY = 3600, 86400
NOW = int(time.time())
BASE = NOW - NOW % DAY - 2 * DAY  # UTC midnight two days ago: every window is whole and in the past


def day(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d")


def local_time(unix: int) -> str:
    """The value of the page's UTC datetime-local input for a unix time."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def page(runner, browser) -> Dashboard:
    return Dashboard(browser, runner.api_url)


def api(runner, key: str, method: str, path: str, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"}
    url = runner.api_url + path
    if method == "GET":
        return requests.get(url, params=params, headers=headers, timeout=10)
    return requests.post(url, data=params, headers=headers, timeout=10)


def test_template_declares_the_dashboard_routes_without_authorizer():
    from metering_local.template import Template
    from tests.browser.conftest import ROOT

    template = Template.load(ROOT / "template.yaml")
    routes = {(r.method, r.path): r for r in template.routes()}
    for path in ("/dashboard", "/dashboard/{asset}"):
        route = routes[("GET", path)]
        assert route.function == "DashboardFunction" and not route.authorized
    code = template.functions()["DashboardFunction"].code_uri
    # `sam build` packages the CodeUri: the page, its sources and the fetched chart library with its license.
    for name in ("index.html", "app.js", "app.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.LICENSE.txt"):
        assert (code / "static" / name).is_file(), name


def test_page_and_assets_are_served_without_a_key_and_paint_fast(runner, page, screenshots):
    response = requests.get(page.url, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    assert "connect-src 'self'" in response.headers["Content-Security-Policy"]
    for asset in ("app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE.txt"):
        assert requests.get(f"{page.url}/{asset}", timeout=10).status_code == 200, asset
    assert requests.get(f"{page.url}/missing.js", timeout=10).status_code == 404
    etag = requests.get(f"{page.url}/app.js", timeout=10).headers["ETag"]
    assert requests.get(f"{page.url}/app.js", headers={"If-None-Match": etag}, timeout=10).status_code == 304

    # First paint on the local runner, from the Performance API: a cold load, then warm reloads.
    page.d.delete_all_cookies()
    page.d.execute_cdp_cmd("Network.clearBrowserCache", {})
    paints, weight = [], None
    for attempt in range(6):
        page.open()
        page.wait(lambda: page.js("return performance.getEntriesByName('first-contentful-paint').length") > 0)
        timing = page.js(
            """const nav = performance.getEntriesByType('navigation')[0];
               const paint = Object.fromEntries(
                 performance.getEntriesByType('paint').map(p => [p.name, p.startTime]));
               const resources = performance.getEntriesByType('resource')
                 .filter(r => r.name.includes('/dashboard/'))
                 .map(r => ({name: r.name.split('/').pop(), bytes: r.decodedBodySize}));
               return {fp: paint['first-paint'], fcp: paint['first-contentful-paint'],
                       dcl: nav.domContentLoadedEventEnd, html: nav.decodedBodySize, resources};"""
        )
        paints.append(timing)
        if attempt == 0:
            weight = timing["html"] + sum(r["bytes"] for r in timing["resources"])
            assert {r["name"] for r in timing["resources"]} >= {"app.js", "uPlot.iife.min.js", "app.css"}
    cold, warm = paints[0], sorted(p["fcp"] for p in paints[1:])
    MEASURED["first contentful paint, cold load (ms)"] = f"{cold['fcp']:.0f} (first paint {cold['fp']:.0f})"
    MEASURED["first contentful paint, warm reloads, median (ms)"] = f"{warm[len(warm) // 2]:.0f}"
    MEASURED["DOMContentLoaded, cold load (ms)"] = f"{cold['dcl']:.0f}"
    MEASURED["page weight, uncompressed (bytes)"] = f"{weight} " + json.dumps(
        {"index.html": cold["html"], **{r["name"]: r["bytes"] for r in cold["resources"]}}
    )
    page.fresh()
    page.screenshot(screenshots, "01-sign-in.png")


def test_sign_in_keeps_the_key_in_session_storage_only(runner, page):
    page.fresh()
    page.fill("#signin-key", "sk_test_not_a_key")
    page.submit("#signin-form")
    assert "Invalid API Key" in page.error("#signin-error")
    assert page.js("return sessionStorage.length") == 0

    page.sign_in(KEY_A)
    account = api(runner, KEY_A, "GET", "/v1/account").json()
    assert page.account_id() == account["id"]
    assert page.text("#account-mode") == "test mode"
    assert page.js("return Object.values(sessionStorage)") == [KEY_A]
    assert page.js("return localStorage.length") == 0 and page.js("return document.cookie") == ""
    assert KEY_A not in page.d.current_url
    # Every request the page made carried no key in its URL.
    urls = page.js("return performance.getEntriesByType('resource').map(r => r.name)")
    assert urls and not [u for u in urls if KEY_A in u]

    # A reload in the same tab stays signed in; signing out forgets the key.
    page.open()
    page.wait(lambda: page.visible("#who"))
    page.el("#sign-out").click()
    page.wait(lambda: page.visible("#signin-form"))
    assert page.js("return sessionStorage.length") == 0 and not page.visible("#who")


def test_keyboard_only_sign_in_and_navigation(runner, page):
    page.fresh()
    body = page.el("body")
    body.click()
    for _ in range(6):  # skip link, then the key field
        page.d.switch_to.active_element.send_keys(Keys.TAB)
        if page.js("return document.activeElement.id") == "signin-key":
            break
    assert page.js("return document.activeElement.id") == "signin-key"
    page.d.switch_to.active_element.send_keys(KEY_A, Keys.ENTER)
    page.wait(lambda: page.visible("#who"))
    page.wait(lambda: page.js("return document.activeElement.id") == "h-meters")
    # Tab to the nav link of the usage view and follow it with Enter.
    link = page.el('#nav a[href="#usage"]')
    for _ in range(30):
        if page.d.switch_to.active_element == link:
            break
        page.d.switch_to.active_element.send_keys(Keys.SHIFT, Keys.TAB)
    assert page.d.switch_to.active_element == link
    link.send_keys(Keys.ENTER)
    page.wait(lambda: page.visible("#view-usage"))
    assert page.js("return document.activeElement.id") == "h-usage"
    assert page.el('#nav a[href="#usage"]').get_attribute("aria-current") == "page"
    for view in ("meters", "usage", "events", "errors", "uploads", "invoices"):
        page.go(view)
        assert page.unlabelled_fields() == [], view


def test_meters_create_rename_deactivate_reactivate(runner, page, screenshots):
    page.sign_in(KEY_A)
    suffix = uid()
    # The API validates; the page shows its error as it comes, message and param.
    assert "display_name" in page.create_meter("", f"dash_{suffix}")
    assert page.el("#meter-form-error .param").text == "(param: display_name)"
    # Blank optional fields are left out, so the API's defaults apply.
    assert page.create_meter("Defaults", f"dash_defaults_{suffix}", "count", **{"m-customer-key": ""}) == ""
    error = page.create_meter("Tokens", f"dash_{suffix}", "sum")
    assert error == ""
    meters = api(runner, KEY_A, "GET", "/v1/billing/meters", limit=100).json()["data"]
    meter = next(m for m in meters if m["event_name"] == f"dash_{suffix}")
    rows = page.meter_rows()
    assert rows[meter["id"]] == {"name": "Tokens", "event_name": f"dash_{suffix}", "status": "active"}
    # Same event name again: the API refuses it and the page says why.
    assert "dash_" in page.create_meter("Again", f"dash_{suffix}", "sum")

    page.el(f'#meters-table tr[data-meter="{meter["id"]}"] button.rename').click()
    field = page.el(f"#rename-{meter['id']}")
    field.clear()
    field.send_keys("LLM tokens", Keys.ENTER)
    page.wait(lambda: page.meter_rows()[meter["id"]]["name"] == "LLM tokens")
    assert (
        api(runner, KEY_A, "GET", f"/v1/billing/meters/{meter['id']}").json()["display_name"] == "LLM tokens"
    )

    page.meter_action(meter["id"], "button.deactivate")
    assert page.meter_rows()[meter["id"]]["status"] == "inactive"
    assert api(runner, KEY_A, "GET", f"/v1/billing/meters/{meter['id']}").json()["status"] == "inactive"
    page.meter_action(meter["id"], "button.reactivate")
    assert page.meter_rows()[meter["id"]]["status"] == "active"
    # Renaming to a blank name is refused by the API, shown in the row.
    page.el(f'#meters-table tr[data-meter="{meter["id"]}"] button.rename').click()
    field = page.el(f"#rename-{meter['id']}")
    field.clear()
    field.send_keys(Keys.ENTER)
    page.wait(lambda: page.visible(f'#meters-table tr[data-meter="{meter["id"]}"] .error'))
    assert "display_name" in page.text(f'#meters-table tr[data-meter="{meter["id"]}"] .error')
    page.el(f'#meters-table tr[data-meter="{meter["id"]}"] .rename-form button[type=button]').click()
    page.screenshot(screenshots, "02-meters.png")


def test_events_from_the_page_drive_the_chart_and_totals(runner, page, screenshots):
    page.sign_in(KEY_A)
    event_name = f"dash_usage_{uid()}"
    assert page.create_meter("API calls", event_name, "sum") == ""
    meter_id = next(k for k, v in page.meter_rows().items() if v["event_name"] == event_name)
    customer = f"cus_{uid()}"

    for offset, value in ((10 * HOUR + 300, "7"), (10 * HOUR + 2400, "3.5"), (13 * HOUR, "1.25")):
        assert page.record_event(meter_id, customer, value, at=local_time(BASE + offset)) == ""
    cancel_id = f"cancel-{uid()}"
    assert (
        page.record_event(meter_id, customer, "100", identifier=cancel_id, at=local_time(BASE + 13 * HOUR))
        == ""
    )
    assert f"Recorded event {cancel_id}" in page.text("#event-form-status")
    # A bad value is refused by the API; the page shows its message and param.
    error = page.record_event(meter_id, customer, "1e3", at=local_time(BASE + 60))
    assert "value" in error and page.el("#event-form-error .param").text.startswith("(param: payload")
    # Cancel the 100 by its identifier (the form is pre-filled with the last recorded event).
    assert page.cancel_event(meter_id, cancel_id) == ""
    assert page.text("#cancel-form-status") == f"Cancellation of {cancel_id}: pending."
    assert "identifier" in page.cancel_event(meter_id, "never-sent")
    page.screenshot(screenshots, "04-record-and-cancel.png")

    shown = page.settled_usage("11.75", meter_id, customer, "hour", day(BASE), day(BASE))
    assert shown["total"] == "11.75" and shown["billed"] == "11.75"
    assert shown["total_text"] == page.format_number("11.75")
    assert shown["windows"] == 24 and shown["canvas"]
    assert shown["points"] == {BASE + 10 * HOUR: 10.5, BASE + 13 * HOUR: 1.25}
    assert shown["table"] == {BASE + 10 * HOUR: "10.5", BASE + 13 * HOUR: "1.25"}

    assert page.show_usage(meter_id, customer, "day", day(BASE - DAY), day(BASE + DAY)) == ""
    shown = page.usage()
    assert shown["windows"] == 3 and shown["points"] == {BASE: 11.75}
    assert shown["total"] == "11.75"

    # A negative correction below zero: the true total goes negative, the billed one stops at 0.
    assert page.record_event(meter_id, customer, "-20.5", at=local_time(BASE + 20 * HOUR)) == ""
    shown = page.settled_usage("-8.75", meter_id, customer, "hour", day(BASE), day(BASE))
    assert shown["billed"] == "0"
    assert shown["total_text"] == page.format_number("-8.75")
    assert shown["billed_text"] == page.format_number("0")
    assert shown["points"][BASE + 20 * HOUR] == -20.5
    # The API's own numbers, for comparison.
    summary = api(
        runner,
        KEY_A,
        "GET",
        f"/v1/billing/meters/{meter_id}/event_summaries",
        customer=customer,
        start_time=BASE,
        end_time=BASE + DAY,
    ).json()["data"][0]
    assert str(summary["aggregated_value"]) == "-8.75"

    page.screenshot(screenshots, "03-usage.png")
    # A missing customer: the API's error, with its param.
    assert "customer" in page.show_usage(meter_id, "", "hour", day(BASE), day(BASE))
    assert page.el("#usage-error .param").text == "(param: customer)"


def test_error_reports_and_bulk_uploads(runner, page, screenshots):
    client = runner.client(KEY_A)
    suffix = uid()
    meter = client.v1.billing.meters.create(
        {
            "display_name": "Uploads",
            "event_name": f"dash_bulk_{suffix}",
            "default_aggregation": {"formula": "sum"},
        }
    )
    session = client.v2.billing.meter_event_session.create()
    stream = stripe.StripeClient(
        session.authentication_token, base_addresses={"meter_events": runner.api_url}
    )
    stream.v2.billing.meter_event_stream.create(
        {
            "events": [
                {
                    "event_name": meter.event_name,
                    "identifier": f"bad-{suffix}",
                    "payload": {"stripe_customer_id": "cus_1", "value": "lots"},
                },
                {
                    "event_name": f"nowhere_{suffix}",
                    "identifier": f"lost-{suffix}",
                    "payload": {"stripe_customer_id": "cus_1", "value": "1"},
                },
            ]
        }
    )
    account_id = api(runner, KEY_A, "GET", "/v1/account").json()["id"]
    rows = ["identifier,timestamp,event_name,payload_stripe_customer_id,payload_value"]
    rows += [f"up{i}-{suffix},{BASE + i * 60},{meter.event_name},cus_1,2" for i in range(3)]
    rows.append(f"upbad-{suffix},{BASE},{meter.event_name},cus_1,NaN")
    key = f"uploads/{account_id}/dashboard-{suffix}.csv"
    runner.boto("s3").put_object(Bucket="metering-uploads", Key=key, Body="\n".join(rows).encode())

    page.sign_in(KEY_A)

    def report_rows():
        page.refresh_events("errors")
        return page.els(f'#errors-table tbody tr[data-type$="{"error_report_triggered"}"]'), page.els(
            '#errors-table tbody tr[data-type$="no_meter_found"]'
        )

    page.wait(lambda: all(report_rows()) and f"bad-{suffix}" in page.text("#errors-table"), timeout=30)
    table = page.text("#errors-table")
    assert "meter_event_invalid_value" in table and "no_meter" in table and f"lost-{suffix}" in table
    row = page.el('#errors-table tbody tr[data-type="v1.billing.meter.error_report_triggered"]')
    assert meter.id in row.text
    page.screenshot(screenshots, "05-error-reports.png")

    def upload_row():
        page.refresh_events("uploads")
        return [r for r in page.els("#uploads-table tbody tr") if key in r.text]

    page.wait(lambda: upload_row(), timeout=40)
    row = upload_row()[0]
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1] == key and cells[2] == "succeeded_with_errors"
    assert cells[3:6] == [page.format_number(str(n)) for n in (4, 3, 1)]
    assert cells[6].startswith(f"results/{account_id}/") and cells[6].endswith(".errors.csv")
    assert "No API route serves the errors file" in page.text("#view-uploads")
    page.screenshot(screenshots, "06-bulk-uploads.png")


def test_invoices_view_lists_or_says_billing_is_off(runner, page, screenshots):
    page.sign_in(KEY_A)
    answer = api(runner, KEY_A, "GET", "/v1/invoices", limit=20)
    page.go("invoices")
    page.wait(lambda: page.el("#view-invoices").get_attribute("data-loads"))
    if answer.status_code == 404:
        assert (
            page.visible("#billing-off")
            and page.text("#billing-off") == "Billing not enabled on this service."
        )
        assert not page.visible("#preview-form")
    else:
        assert answer.status_code == 200, answer.text
        page.fill("#p-subscription", "sub_missing")
        page.submit("#preview-form")
        missing = api(runner, KEY_A, "POST", "/v1/invoices/create_preview", subscription="sub_missing")
        assert missing.status_code >= 400
        assert missing.json()["error"]["message"] in page.error("#preview-error")
        subscription = _metered_subscription(runner)
        page.go("meters")
        page.go("invoices")  # reloads the list
        page.wait(lambda: page.el("#view-invoices").get_attribute("data-loads") != "1")
        listed = api(runner, KEY_A, "GET", "/v1/invoices", limit=20).json()["data"]
        ids = {r.get_attribute("data-invoice") for r in page.els("#invoices-table tbody tr")}
        assert ids == {inv["id"] for inv in listed}
        if subscription:
            deadline = time.time() + 15  # usage settles within about a second
            while True:
                preview = api(runner, KEY_A, "POST", "/v1/invoices/create_preview", subscription=subscription)
                if preview.json().get("total") or time.time() > deadline:
                    break
                time.sleep(0.2)
            preview = preview.json()
            page.fill("#p-subscription", subscription)
            page.submit("#preview-form")
            assert page.error("#preview-error") == ""
            want = page.js(
                "const f = new Intl.NumberFormat(undefined,"
                " {style: 'currency', currency: arguments[1].toUpperCase()});"
                "return f.format(arguments[0] / 10 ** f.resolvedOptions().maximumFractionDigits)",
                preview["total"],
                preview["currency"],
            )
            assert page.text("#preview-total") == want
    page.screenshot(screenshots, "07-invoices.png")


def _metered_subscription(runner) -> str | None:
    """A customer on a metered price with some usage, when the billing API accepts Stripe's calls."""
    client = runner.client(KEY_A)
    try:
        meter = client.v1.billing.meters.create(
            {
                "display_name": "Billed calls",
                "event_name": f"dash_billed_{uid()}",
                "default_aggregation": {"formula": "sum"},
            }
        )
        customer = client.v1.customers.create({"name": "Dashboard customer"})
        price = client.v1.prices.create(
            {
                "currency": "usd",
                "unit_amount": 25,
                "product_data": {"name": "API calls"},
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            }
        )
        subscription = client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": price.id}]}
        )
        client.v1.billing.meter_events.create(
            {"event_name": meter.event_name, "payload": {"stripe_customer_id": customer.id, "value": "12"}}
        )
        return subscription.id
    except stripe.StripeError:
        return None  # the billing API is still being built: the list and error paths are covered above


def test_account_b_never_sees_account_a(runner, page):
    client_a = runner.client(KEY_A)
    suffix = uid()
    meter_a = client_a.v1.billing.meters.create(
        {
            "display_name": f"Secret A {suffix}",
            "event_name": f"secret_a_{suffix}",
            "default_aggregation": {"formula": "sum"},
        }
    )
    client_a.v1.billing.meter_events.create(
        {
            "event_name": meter_a.event_name,
            "identifier": f"a-evt-{suffix}",
            "payload": {"stripe_customer_id": "cus_shared", "value": "42"},
        }
    )
    account_a = api(runner, KEY_A, "GET", "/v1/account").json()["id"]
    events_a = api(runner, KEY_A, "GET", "/v2/core/events", limit=100).json()["data"]

    page.sign_in(KEY_A)
    assert meter_a.id in page.meter_rows()

    page.el("#sign-out").click()
    page.wait(lambda: page.visible("#signin-form"))
    page.sign_in(KEY_B)
    account_b = page.account_id()
    assert account_b != account_a
    assert meter_a.id not in page.meter_rows()
    options = page.js("return [...document.querySelectorAll('select option')].map(o => o.value)")
    assert meter_a.id not in options
    for view in ("meters", "usage", "events", "errors", "uploads", "invoices"):
        page.go(view)
        if view in ("errors", "uploads"):
            page.refresh_events(view)
        source = page.d.page_source
        for secret in (
            account_a,
            meter_a.id,
            meter_a.event_name,
            f"Secret A {suffix}",
            *[e["id"] for e in events_a],
        ):
            assert secret not in source, (view, secret)
    # Asked through the page's own API client with B's key, A's meter does not exist.
    outcome = page.d.execute_async_script(
        """const done = arguments[arguments.length - 1];
           window.dashboard.api('GET', '/v1/billing/meters/' + arguments[0] + '/event_summaries',
             {customer: 'cus_shared', start_time: arguments[1], end_time: arguments[2]})
           .then(r => done({ok: true, body: r}),
                 e => done({ok: false, status: e.status, message: e.message}));""",
        meter_a.id,
        NOW - NOW % DAY,
        NOW - NOW % DAY + DAY,
    )
    assert outcome["ok"] is False and outcome["status"] == 404, outcome
