"""A small page object for the dashboard: sign in, switch views, fill forms, wait for answers."""

import base64
import time
from pathlib import Path

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

TIMEOUT = 20


class Dashboard:
    def __init__(self, driver, api_url: str):
        self.d = driver
        self.url = f"{api_url}/dashboard"

    # ---------- basics ----------

    def wait(self, condition, timeout: float = TIMEOUT, message: str = ""):
        return WebDriverWait(self.d, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: condition(), message
        )

    def js(self, script: str, *args):
        return self.d.execute_script(script, *args)

    def el(self, css: str):
        return self.d.find_element(By.CSS_SELECTOR, css)

    def els(self, css: str):
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.el(css).text

    def visible(self, css: str) -> bool:
        found = self.els(css)
        return bool(found) and found[0].is_displayed()

    def fill(self, css: str, value: str):
        field = self.el(css)
        field.clear()
        if value:
            field.send_keys(value)

    def set_value(self, css: str, value: str):
        """For date and datetime inputs, whose typed format depends on the locale."""
        self.js("document.querySelector(arguments[0]).value = arguments[1]", css, value)

    def choose(self, css: str, value: str):
        Select(self.el(css)).select_by_value(value)

    def submit(self, form_css: str):
        """Click the form's submit button and wait until the API has answered."""
        before = self.el(form_css).get_attribute("data-done") or "0"
        self.el(f"{form_css} button[type=submit]").click()
        self.wait(
            lambda: (self.el(form_css).get_attribute("data-done") or "0") != before,
            message=f"{form_css} got no answer",
        )

    def error(self, css: str) -> str:
        return self.text(css) if self.visible(css) else ""

    def format_number(self, value: str) -> str:
        """The browser locale's rendering of an exact decimal, as the page does it."""
        return self.js(
            "return new Intl.NumberFormat(undefined, {maximumFractionDigits: 15}).format(arguments[0])", value
        )

    # ---------- session ----------

    def open(self):
        self.d.get(self.url)
        self.wait(lambda: self.js("return document.readyState") == "complete")

    def fresh(self):
        """A signed-out page: no key in this tab."""
        self.open()
        # Let a sign-in from a kept key finish first: it writes the key back when it succeeds.
        self.wait(lambda: not self.visible("#loading"))
        self.js("sessionStorage.clear()")
        self.open()
        self.wait(lambda: self.visible("#signin-form"))

    def sign_in(self, key: str):
        self.fresh()
        self.fill("#signin-key", key)
        self.submit("#signin-form")
        self.wait(lambda: self.visible("#who"), message="sign in failed: " + self.error("#signin-error"))
        self.wait(lambda: self.visible("#view-meters"))

    def account_id(self) -> str:
        return self.text("#account-id")

    def go(self, view: str):
        self.el(f'#nav a[href="#{view}"]').click()
        self.wait(lambda: self.visible(f"#view-{view}"))

    # ---------- views ----------

    def meter_rows(self) -> dict[str, dict]:
        rows = {}
        for row in self.els("#meters-table tbody tr"):
            cells = row.find_elements(By.TAG_NAME, "td")
            rows[row.get_attribute("data-meter")] = {
                "name": cells[0].text.split("\n")[0],
                "event_name": cells[1].text,
                "status": cells[5].text,
            }
        return rows

    def meter_action(self, meter_id: str, css: str):
        renders = self.el("#meters-table").get_attribute("data-renders")
        self.el(f'#meters-table tr[data-meter="{meter_id}"] {css}').click()
        self.wait(lambda: self.el("#meters-table").get_attribute("data-renders") != renders)

    def create_meter(self, display_name: str, event_name: str, formula: str = "sum", **fields) -> str:
        self.go("meters")
        self.fill("#m-display-name", display_name)
        self.fill("#m-event-name", event_name)
        self.choose("#m-formula", formula)
        for css, value in fields.items():
            self.fill(f"#{css}", value)
        self.submit("#meter-form")
        return self.error("#meter-form-error")

    def record_event(self, meter_id: str, customer: str, value: str = "", identifier: str = "", at: str = ""):
        self.go("events")
        self.choose("#e-meter", meter_id)
        self.fill("#e-customer", customer)
        if self.visible("#e-value"):
            self.fill("#e-value", value)
        self.fill("#e-identifier", identifier)
        self.set_value("#e-time", at)
        self.submit("#event-form")
        return self.error("#event-form-error")

    def cancel_event(self, meter_id: str, identifier: str) -> str:
        self.go("events")
        self.choose("#c-meter", meter_id)
        self.fill("#c-identifier", identifier)
        self.submit("#cancel-form")
        return self.error("#cancel-form-error")

    def show_usage(self, meter_id: str, customer: str, window: str, first_day: str, last_day: str):
        self.go("usage")
        self.choose("#u-meter", meter_id)
        self.fill("#u-customer", customer)
        self.choose("#u-window", window)
        self.set_value("#u-from", first_day)
        self.set_value("#u-to", last_day)
        self.submit("#usage-form")
        return self.error("#usage-error")

    def usage(self) -> dict:
        """What the page shows: totals (exact and as displayed), the chart's data, the table."""
        chart = self.js("const c = window.dashboard.state.chart; return c ? c.data : null")
        points = {x: y for x, y in zip(chart[0], chart[1], strict=True) if y is not None} if chart else {}
        table = {
            int(row.get_attribute("data-start")): row.get_attribute("data-value")
            for row in self.els("#usage-table tbody tr")
        }
        return {
            "total": self.el("#usage-total").get_attribute("data-value"),
            "billed": self.el("#usage-billed").get_attribute("data-value"),
            "total_text": self.text("#usage-total"),
            "billed_text": self.text("#usage-billed"),
            "windows": len(chart[0]) if chart else 0,
            "points": points,
            "table": table,
            "canvas": bool(self.els("#usage-chart canvas")),
        }

    def settled_usage(self, want_total: str, *args, timeout: float = TIMEOUT) -> dict:
        """Summaries settle within about a second: ask again until the page shows `want_total`."""
        deadline = time.time() + timeout
        while True:
            problem = self.show_usage(*args)
            shown = self.usage() if not problem else {}
            if shown.get("total") == want_total or time.time() > deadline:
                assert not problem, problem
                return shown
            time.sleep(0.3)

    def events_idle(self) -> bool:
        return self.js("return (document.body.dataset.eventsBusy || '0') === '0'")

    def refresh_events(self, view: str):
        """Reload /v2/core/events in the view and wait until no load is in flight."""
        self.go(view)
        self.wait(self.events_idle)
        loads = self.js("return document.body.dataset.eventLoads || '0'")
        self.el(f"#view-{view} .refresh-events").click()
        self.wait(
            lambda: self.js("return document.body.dataset.eventLoads || '0'") != loads and self.events_idle()
        )

    def unlabelled_fields(self) -> list[str]:
        return self.js(
            "return [...document.querySelectorAll('input, select, textarea')]"
            ".filter(el => !el.labels.length && !el.getAttribute('aria-label')).map(el => el.id || el.name)"
        )

    def screenshot(self, folder: Path, name: str):
        """The whole page (beyond the viewport) as a PNG."""
        self.js("window.scrollTo(0, 0); document.activeElement && document.activeElement.blur()")
        shot = self.d.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "fromSurface": True}
        )
        (folder / name).write_bytes(base64.b64decode(shot["data"]))
