/* Usage dashboard: plain JavaScript over this service's public API, same origin only.
 * The secret key lives in this tab's sessionStorage and travels only in the Authorization
 * header. Everything shown comes from /v1 and /v2 routes answered for that key's account. */
"use strict";
(function () {
  const KEY = "metering.dashboard.key";
  // The page is <base>/dashboard: <base> is "" locally and "/<stage>" on API Gateway.
  const BASE = location.pathname.replace(/\/dashboard\/?$/, "");
  const HOUR = 3600, DAY = 86400;
  const MAX_WINDOWS = 2000;
  const EVENT_PAGES = 5;

  const $ = (id) => document.getElementById(id);
  const nf = new Intl.NumberFormat(undefined, { maximumFractionDigits: 15 });
  const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const utcTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short", timeZone: "UTC" });
  const utcDate = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeZone: "UTC" });

  const state = { meters: [], events: [], nextEvents: null, eventsLoaded: false, chart: null, usage: null };

  /* ---------- small helpers ---------- */

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else if (name === "dataset") Object.assign(el.dataset, value);
      else el.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  /** Exact decimals: format the JSON number's own text when the browser gives it (Intl takes strings). */
  function num(value) {
    if (value === null || value === undefined || value === "") return "–";
    return nf.format(typeof value === "string" ? value : Number(value));
  }

  /** max(0, total) on the decimal's text, so no digit is lost. */
  function billed(value) {
    const text = String(value);
    return text.startsWith("-") ? "0" : text;
  }

  function when(unixOrIso) {
    const date = typeof unixOrIso === "number" ? new Date(unixOrIso * 1000) : new Date(unixOrIso);
    return isNaN(date) ? String(unixOrIso) : dateTime.format(date);
  }

  function money(amount, currency) {
    if (amount === null || amount === undefined) return "–";
    if (!currency) return num(amount);
    try {
      const fmt = new Intl.NumberFormat(undefined, { style: "currency", currency: currency.toUpperCase() });
      return fmt.format(Number(amount) / 10 ** fmt.resolvedOptions().maximumFractionDigits);
    } catch (_) {
      return num(amount) + " " + currency;
    }
  }

  /** Form encoding with Stripe's brackets: {payload: {a: 1}} -> payload[a]=1. Blank strings are sent
   * (the API judges them); undefined and null are left out. */
  function encode(params, prefix, out) {
    out = out || new URLSearchParams();
    for (const [name, value] of Object.entries(params || {})) {
      if (value === undefined || value === null) continue;
      const key = prefix ? `${prefix}[${name}]` : name;
      if (typeof value === "object") encode(value, key, out);
      else out.append(key, String(value));
    }
    return out;
  }

  /** JSON.parse keeping aggregated_value's exact text where the browser exposes the source. */
  function parseJSON(text) {
    return JSON.parse(text, function (key, value, context) {
      if (key === "aggregated_value" && context && typeof context.source === "string") return context.source;
      return value;
    });
  }

  class ApiError extends Error {
    constructor(status, error) {
      super(error.message || `HTTP ${status}`);
      this.status = status;
      this.param = error.param;
      this.code = error.code;
      this.type = error.type;
    }
  }

  async function api(method, path, params, key) {
    key = key || sessionStorage.getItem(KEY);
    const headers = { Authorization: "Bearer " + key, Accept: "application/json" };
    let url = BASE + path;
    let body;
    if (method === "GET" && params) {
      const query = encode(params).toString();
      if (query) url += (url.includes("?") ? "&" : "?") + query;
    } else if (method === "POST") {
      headers["Content-Type"] = "application/x-www-form-urlencoded";
      body = encode(params).toString();
    }
    let response;
    try {
      response = await fetch(url, { method, headers, body, cache: "no-store", credentials: "omit" });
    } catch (err) {
      throw new ApiError(0, { message: "The service could not be reached: " + err.message });
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? parseJSON(text) : {};
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const error = (data && data.error) || { message: text || response.statusText };
      throw new ApiError(response.status, error);
    }
    return data;
  }

  function showError(el, err) {
    el.replaceChildren();
    if (!err) {
      el.hidden = true;
      return;
    }
    el.append(h("span", { class: "message" }, err.message || String(err)));
    if (err.param) el.append(" ", h("span", { class: "param" }, "(param: ", h("code", {}, err.param), ")"));
    if (err.code) el.append(" ", h("span", { class: "code" }, "[", err.code, "]"));
    el.hidden = false;
  }

  function setStatus(el, text) {
    el.textContent = text || "";
  }

  /** Run a form submit with its button disabled; errors land in errorEl as the API gave them. */
  function onSubmit(form, errorEl, handler) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button[type=submit]");
      showError(errorEl, null);
      const status = form.querySelector("[role=status]");
      if (status) status.textContent = "";
      button.disabled = true;
      form.setAttribute("aria-busy", "true");
      try {
        await handler(new FormData(form));
      } catch (err) {
        showError(errorEl, err);
      } finally {
        button.disabled = false;
        form.removeAttribute("aria-busy");
        form.dataset.done = String(Number(form.dataset.done || 0) + 1); // lets tests wait for an answer
      }
    });
  }

  /* ---------- sign in and views ---------- */

  async function signIn(key) {
    const account = await api("GET", "/v1/account", null, key);
    sessionStorage.setItem(KEY, key);
    $("account-id").textContent = account.id;
    $("account-mode").textContent = account.livemode ? "live mode" : "test mode";
    for (const el of document.querySelectorAll(".acct")) el.textContent = account.id;
    $("who").hidden = false;
    $("nav").hidden = false;
    await loadMeters();
    state.view = route();
  }

  const VIEWS = ["meters", "usage", "events", "errors", "uploads", "invoices"];
  const LOADERS = { errors: ensureEvents, uploads: ensureEvents, invoices: loadInvoices };

  function route() {
    const signedIn = !!sessionStorage.getItem(KEY) && !$("who").hidden;
    const asked = location.hash.slice(1);
    if (asked && !VIEWS.includes(asked) && signedIn) return; // e.g. the skip link: stay where we are
    const view = signedIn ? (VIEWS.includes(asked) ? asked : "meters") : "signin";
    for (const section of document.querySelectorAll("[data-view]")) section.hidden = section.dataset.view !== view;
    for (const link of document.querySelectorAll("#nav a")) {
      if (link.getAttribute("href") === "#" + view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = (view === "signin" ? "Sign in" : $("h-" + view).textContent) + " – Usage dashboard";
    if (LOADERS[view]) LOADERS[view]();
    if (view === "usage" && state.usage) drawChart(state.usage);
    return view;
  }

  window.addEventListener("hashchange", () => {
    const view = route();
    if (view) {
      state.view = view;
      $("h-" + view).focus();
    }
  });

  onSubmit($("signin-form"), $("signin-error"), async (data) => {
    const key = String(data.get("key") || "").trim();
    if (!key) throw new Error("Enter a secret API key.");
    await signIn(key);
    $("signin-key").value = "";
    $("h-" + (state.view || "meters")).focus();
  });

  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    // A reload drops every piece of the account's data from the page.
    location.replace(location.pathname);
  });

  /* ---------- meters ---------- */

  async function loadMeters() {
    const meters = [];
    let after;
    for (let page = 0; page < 20; page++) {
      const list = await api("GET", "/v1/billing/meters", { limit: 100, starting_after: after });
      meters.push(...list.data);
      if (!list.has_more || !list.data.length) break;
      after = list.data[list.data.length - 1].id;
    }
    state.meters = meters;
    renderMeters();
    renderMeterSelects();
  }

  function meterById(id) {
    return state.meters.find((m) => m.id === id);
  }

  function renderMeters() {
    const tbody = $("meters-table").querySelector("tbody");
    tbody.replaceChildren(...state.meters.map(meterRow));
    $("meters-empty").hidden = state.meters.length > 0;
    $("meters-table").dataset.renders = String(Number($("meters-table").dataset.renders || 0) + 1);
  }

  function meterRow(meter) {
    const active = meter.status === "active";
    const nameCell = h("td", { class: "name" }, meter.display_name, h("br"), h("code", { class: "id" }, meter.id));
    const error = h("div", { class: "error", role: "alert", hidden: true });
    const lifecycle = h(
      "button",
      {
        type: "button",
        class: active ? "deactivate" : "reactivate",
        "aria-label": `${active ? "Deactivate" : "Reactivate"} ${meter.display_name}`,
        onclick: () => act(() => api("POST", `/v1/billing/meters/${meter.id}/${active ? "deactivate" : "reactivate"}`)),
      },
      active ? "Deactivate" : "Reactivate"
    );
    const rename = h(
      "button",
      { type: "button", class: "rename", "aria-label": `Rename ${meter.display_name}`, onclick: () => openRename() },
      "Rename"
    );
    const usage = h("a", { href: "#usage", class: "usage-link", onclick: () => { $("u-meter").value = meter.id; } }, "Usage");
    const actions = h("td", { class: "actions" }, rename, " ", lifecycle, " ", usage, error);
    const row = h(
      "tr",
      { dataset: { meter: meter.id } },
      nameCell,
      h("td", {}, h("code", {}, meter.event_name)),
      h("td", {}, meter.default_aggregation.formula),
      h("td", { class: "keys" }, "customer: ", h("code", {}, meter.customer_mapping.event_payload_key),
        h("br"), "value: ", h("code", {}, meter.value_settings.event_payload_key)),
      h("td", {}, meter.event_time_window || "raw"),
      h("td", { class: "status " + meter.status }, meter.status),
      h("td", {}, when(meter.created)),
      actions
    );

    async function act(call) {
      showError(error, null);
      try {
        const updated = await call();
        state.meters = state.meters.map((m) => (m.id === updated.id ? updated : m));
        renderMeters();
        renderMeterSelects();
        const again = $("meters-table").querySelector(`tr[data-meter="${updated.id}"] td.actions button`);
        if (again) again.focus();
      } catch (err) {
        showError(error, err);
      }
    }

    function openRename() {
      const input = h("input", { id: `rename-${meter.id}`, name: "display_name", value: meter.display_name, autocomplete: "off" });
      const form = h(
        "form",
        { class: "rename-form", novalidate: true },
        h("label", { for: input.id }, `New name for ${meter.display_name}`),
        " ",
        input,
        " ",
        h("button", { type: "submit" }, "Save"),
        " ",
        h("button", { type: "button", onclick: () => renderMeters() }, "Cancel"),
        error
      );
      form.addEventListener("keydown", (e) => {
        if (e.key === "Escape") renderMeters();
      });
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        act(() => api("POST", `/v1/billing/meters/${meter.id}`, { display_name: input.value }));
      });
      actions.replaceChildren(form);
      input.focus();
      input.select();
    }
    return row;
  }

  function renderMeterSelects() {
    const fill = (select, meters, label) => {
      const keep = select.value;
      select.replaceChildren(...meters.map((m) => h("option", { value: m.id }, label(m))));
      if (meters.some((m) => m.id === keep)) select.value = keep;
    };
    const usageLabel = (m) => `${m.display_name} (${m.event_name})${m.status === "active" ? "" : " – inactive"}`;
    fill($("u-meter"), state.meters, usageLabel);
    fill($("e-meter"), state.meters.filter((m) => m.status === "active"), (m) => `${m.event_name} – ${m.display_name}`);
    fill($("c-meter"), state.meters, (m) => `${m.event_name} – ${m.display_name}`);
    eventFormKeys();
  }

  onSubmit($("meter-form"), $("meter-form-error"), async (data) => {
    const params = {};
    for (const [name, value] of data.entries()) if (value !== "") params[name] = value;
    const meter = await api("POST", "/v1/billing/meters", params);
    setStatus($("meter-form-status"), `Created ${meter.display_name} (${meter.id}).`);
    $("meter-form").reset();
    await loadMeters();
  });

  /* ---------- usage ---------- */

  function isoDay(unix) {
    return new Date(unix * 1000).toISOString().slice(0, 10);
  }

  function utcDay(value) {
    const ms = Date.parse(value + "T00:00:00Z");
    return isNaN(ms) ? null : ms / 1000;
  }

  function usageDefaults() {
    const today = Math.floor(Date.now() / 1000 / DAY) * DAY;
    if (!$("u-from").value) $("u-from").value = isoDay(today - 6 * DAY);
    if (!$("u-to").value) $("u-to").value = isoDay(today);
  }

  async function allWindows(meterId, params) {
    const out = [];
    let after;
    while (out.length < MAX_WINDOWS) {
      const page = await api("GET", `/v1/billing/meters/${meterId}/event_summaries`, { ...params, limit: 100, starting_after: after });
      out.push(...page.data);
      if (!page.has_more || !page.data.length) break;
      after = page.data[page.data.length - 1].id;
    }
    return out;
  }

  onSubmit($("usage-form"), $("usage-error"), async (data) => {
    const meterId = data.get("meter");
    if (!meterId) throw new Error("Create a meter first.");
    const windowName = data.get("value_grouping_window");
    const size = windowName === "day" ? DAY : HOUR;
    const from = utcDay(data.get("from"));
    const to = utcDay(data.get("to"));
    if (from === null) throw Object.assign(new Error("Choose a start date."), { param: "from" });
    if (to === null) throw Object.assign(new Error("Choose an end date."), { param: "to" });
    const start = from;
    const end = to + DAY; // the end date is inclusive: the range ends at the next UTC midnight
    if (end <= start) throw Object.assign(new Error("The end date is before the start date."), { param: "to" });
    if ((end - start) / size > MAX_WINDOWS) {
      throw Object.assign(new Error(`That is more than ${MAX_WINDOWS} ${windowName} windows; choose a shorter range or group by day.`), { param: "from" });
    }
    const customer = String(data.get("customer") || "").trim();
    const base = { customer, start_time: start, end_time: end };
    const [windows, whole] = await Promise.all([
      allWindows(meterId, { ...base, value_grouping_window: windowName }),
      api("GET", `/v1/billing/meters/${meterId}/event_summaries`, base),
    ]);
    const total = whole.data.length ? whole.data[0].aggregated_value : "0";
    state.usage = { meter: meterById(meterId), customer, windowName, size, start, end, windows, total: String(total) };
    renderUsage(state.usage);
  });

  function renderUsage(usage) {
    $("usage-result").hidden = false;
    $("usage-total").textContent = num(usage.total);
    $("usage-total").dataset.value = usage.total;
    $("usage-billed").textContent = num(billed(usage.total));
    $("usage-billed").dataset.value = billed(usage.total);
    const name = usage.meter ? usage.meter.display_name : "";
    setStatus(
      $("usage-range"),
      `${name} for ${usage.customer}: ${utcDate.format(new Date(usage.start * 1000))} to ` +
        `${utcDate.format(new Date((usage.end - DAY) * 1000))} (UTC, inclusive), per ${usage.windowName}.`
    );
    const rows = usage.windows.slice().sort((a, b) => a.start_time - b.start_time);
    $("usage-table-caption").textContent = `Usage per ${usage.windowName} (windows with events)`;
    $("usage-table").querySelector("tbody").replaceChildren(
      ...rows.map((s) =>
        h("tr", { dataset: { start: s.start_time, value: s.aggregated_value } },
          h("td", {}, usage.windowName === "day" ? utcDate.format(new Date(s.start_time * 1000)) : utcTime.format(new Date(s.start_time * 1000))),
          h("td", { class: "num" }, num(s.aggregated_value)))
      )
    );
    drawChart(usage);
  }

  function chartData(usage) {
    const byStart = new Map(usage.windows.map((s) => [s.start_time, Number(s.aggregated_value)]));
    const xs = [], ys = [];
    for (let t = usage.start; t < usage.end; t += usage.size) {
      xs.push(t);
      ys.push(byStart.has(t) ? byStart.get(t) : null);
    }
    return [xs, ys];
  }

  function drawChart(usage) {
    const el = $("usage-chart");
    if (el.offsetParent === null) return; // hidden: drawn when the view shows
    const data = chartData(usage);
    if (state.chart) state.chart.destroy();
    el.replaceChildren();
    $("usage-caption").textContent = `${usage.meter ? usage.meter.display_name : ""} per ${usage.windowName}, UTC; empty windows have no events.`;
    if (typeof uPlot === "undefined") {
      el.append(h("p", { class: "note" }, "The chart library is not installed (run make dashboard-assets); the table below has the data."));
      state.chart = { data, destroy() {} };
      return;
    }
    const opts = {
      width: Math.max(320, el.clientWidth || 800),
      height: 280,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: { x: { time: true } },
      legend: { show: true },
      series: [
        { label: "Window start (UTC)", value: (u, v) => (v == null ? "–" : utcTime.format(new Date(v * 1000))) },
        {
          label: usage.meter ? usage.meter.display_name : "usage",
          stroke: "#1f5fbf",
          fill: "rgba(31, 95, 191, 0.35)",
          width: 1,
          paths: uPlot.paths.bars({ size: [0.8, 48], align: 1 }),
          points: { show: false },
          value: (u, v) => (v == null ? "–" : num(v)),
        },
      ],
      axes: [{}, { values: (u, splits) => splits.map((v) => num(v)), size: 70 }],
    };
    state.chart = new uPlot(opts, data, el);
  }

  window.addEventListener("resize", () => {
    if (state.chart && state.chart.setSize) {
      state.chart.setSize({ width: Math.max(320, $("usage-chart").clientWidth), height: 280 });
    }
  });

  /* ---------- record and cancel events ---------- */

  function eventFormKeys() {
    const meter = meterById($("e-meter").value);
    const customerKey = meter ? meter.customer_mapping.event_payload_key : "stripe_customer_id";
    const valueKey = meter ? meter.value_settings.event_payload_key : "value";
    $("e-customer-label").textContent = `Customer ID (payload[${customerKey}])`;
    $("e-value-label").textContent = `Value (payload[${valueKey}])`;
    $("e-value-row").hidden = !!meter && meter.default_aggregation.formula === "count";
  }

  $("e-meter").addEventListener("change", eventFormKeys);

  onSubmit($("event-form"), $("event-form-error"), async (data) => {
    const meter = meterById(data.get("meter"));
    if (!meter) throw Object.assign(new Error("Choose an active meter (create one first)."), { param: "event_name" });
    const payload = { [meter.customer_mapping.event_payload_key]: data.get("customer") };
    if (meter.default_aggregation.formula !== "count") payload[meter.value_settings.event_payload_key] = data.get("value");
    const params = { event_name: meter.event_name, payload };
    if (data.get("identifier")) params.identifier = data.get("identifier"); // generated by the API when absent
    const time = data.get("timestamp");
    if (time) {
      const ms = Date.parse(time + (time.length === 16 ? ":00Z" : "Z"));
      if (isNaN(ms)) throw Object.assign(new Error("The time is not a valid date and time."), { param: "timestamp" });
      params.timestamp = Math.floor(ms / 1000);
    }
    const event = await api("POST", "/v1/billing/meter_events", params);
    setStatus($("event-form-status"), `Recorded event ${event.identifier}.`);
    const value = meter.default_aggregation.formula === "count" ? "" : data.get("value");
    $("recent-table").hidden = false;
    $("recent-table").querySelector("tbody").prepend(
      h("tr", { dataset: { identifier: event.identifier } },
        h("td", {}, h("code", {}, event.identifier)),
        h("td", {}, h("code", {}, event.event_name)),
        h("td", {}, data.get("customer")),
        h("td", { class: "num" }, value === "" ? "–" : num(value)),
        h("td", {}, utcTime.format(new Date(event.timestamp * 1000))))
    );
    $("c-meter").value = meter.id;
    $("c-identifier").value = event.identifier;
    $("e-identifier").value = "";
  });

  onSubmit($("cancel-form"), $("cancel-form-error"), async (data) => {
    const meter = meterById(data.get("meter"));
    if (!meter) throw Object.assign(new Error("Choose a meter."), { param: "event_name" });
    const identifier = data.get("identifier");
    const adjustment = await api("POST", "/v1/billing/meter_event_adjustments", {
      event_name: meter.event_name,
      type: "cancel",
      cancel: { identifier },
    });
    setStatus($("cancel-form-status"), `Cancellation of ${identifier}: ${adjustment.status}.`);
  });

  /* ---------- error reports and bulk uploads (/v2/core/events) ---------- */

  const ERROR_TYPES = ["v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found"];
  const UPLOAD_TYPES = ["data_management.import_set.succeeded", "data_management.import_set.failed"];

  async function fetchEvents(reset) {
    let url = reset ? "/v2/core/events?limit=100" : state.nextEvents;
    if (reset) state.events = [];
    for (let page = 0; url && page < EVENT_PAGES; page++) {
      const list = await api("GET", url.startsWith("/") ? url : "/" + url);
      state.events.push(...list.data);
      url = list.next_page_url;
    }
    state.nextEvents = url;
    state.eventsLoaded = true;
  }

  let eventsInFlight = 0;

  async function ensureEvents(force) {
    const errorEls = [$("errors-error"), $("uploads-error")];
    document.body.dataset.eventsBusy = String(++eventsInFlight);
    try {
      if (!state.eventsLoaded || force === true) await fetchEvents(true);
      errorEls.forEach((el) => showError(el, null));
    } catch (err) {
      errorEls.forEach((el) => showError(el, err));
    }
    renderErrors();
    renderUploads();
    document.body.dataset.eventsBusy = String(--eventsInFlight);
    document.body.dataset.eventLoads = String(Number(document.body.dataset.eventLoads || 0) + 1);
  }

  for (const button of document.querySelectorAll(".refresh-events")) button.addEventListener("click", () => ensureEvents(true));
  for (const button of document.querySelectorAll(".more-events")) {
    button.addEventListener("click", async () => {
      try {
        await fetchEvents(false);
      } catch (err) {
        showError($("errors-error"), err);
      }
      renderErrors();
      renderUploads();
    });
  }

  function renderErrors() {
    const reports = state.events.filter((e) => ERROR_TYPES.includes(e.type));
    $("errors-table").querySelector("tbody").replaceChildren(
      ...reports.map((e) => {
        const data = e.data || {};
        const reason = data.reason || {};
        const meter = e.related_object ? meterById(e.related_object.id) : null;
        const types = (reason.error_types || []).map((t) =>
          h("li", { dataset: { code: t.code } },
            h("code", { class: "code" }, t.code), ": ", h("span", { class: "count" }, num(t.error_count)),
            h("ul", { class: "samples" },
              (t.sample_errors || []).map((s) =>
                h("li", {}, s.error_message, s.request && s.request.identifier ? [" (identifier ", h("code", {}, s.request.identifier), ")"] : null))))
        );
        return h("tr", { dataset: { event: e.id, type: e.type } },
          h("td", {}, when(e.created)),
          h("td", {}, h("code", {}, e.type)),
          h("td", {}, e.related_object ? [meter ? meter.display_name + " " : "", h("code", {}, e.related_object.id)] : "no meter"),
          h("td", { class: "num" }, num(reason.error_count)),
          h("td", {}, data.developer_message_summary || "", h("ul", { class: "types" }, types)));
      })
    );
    $("errors-empty").hidden = reports.length > 0;
    for (const b of document.querySelectorAll(".more-events")) b.hidden = !state.nextEvents;
  }

  function renderUploads() {
    const uploads = state.events.filter((e) => UPLOAD_TYPES.includes(e.type));
    $("uploads-table").querySelector("tbody").replaceChildren(
      ...uploads.map((e) => {
        const r = e.data || {};
        return h("tr", { dataset: { event: e.id, status: r.status || "" } },
          h("td", {}, when(e.created)),
          h("td", {}, h("code", {}, r.file || "")),
          h("td", { class: "status " + (r.status || "") }, r.status || "", r.failed_reason ? [h("br"), r.failed_reason] : null),
          h("td", { class: "num" }, num(r.records)),
          h("td", { class: "num" }, num(r.ingested)),
          h("td", { class: "num" }, num(r.errors)),
          h("td", { class: "errors-file" }, r.errors_file ? h("code", {}, r.errors_file) : "none"));
      })
    );
    $("uploads-empty").hidden = uploads.length > 0;
  }

  /* ---------- invoices (billing, when enabled) ---------- */

  function billingOff(err) {
    return err && err.status === 404 && (!err.param || err.code === "url_invalid");
  }

  /** `subscription` in older API versions, `parent.subscription_details.subscription` in newer ones. */
  function subscriptionOf(inv) {
    const details = inv.parent && inv.parent.subscription_details;
    return inv.subscription || (details && details.subscription) || null;
  }

  async function loadInvoices() {
    showError($("invoices-error"), null);
    try {
      const list = await api("GET", "/v1/invoices", { limit: 20 });
      $("billing-off").hidden = true;
      $("billing-on").hidden = false;
      const invoices = list.data || [];
      $("invoices-table").querySelector("tbody").replaceChildren(
        ...invoices.map((inv) =>
          h("tr", { dataset: { invoice: inv.id } },
            h("td", {}, h("code", {}, inv.id)),
            h("td", {}, inv.customer ? h("code", {}, inv.customer) : "–"),
            h("td", {}, subscriptionOf(inv) ? h("code", {}, subscriptionOf(inv)) : "–"),
            h("td", {}, inv.status || "–"),
            h("td", { class: "num" }, money(inv.total, inv.currency)),
            h("td", {}, inv.created ? when(inv.created) : "–")))
      );
      $("invoices-empty").hidden = invoices.length > 0;
    } catch (err) {
      $("billing-on").hidden = true;
      if (billingOff(err)) $("billing-off").hidden = false;
      else showError($("invoices-error"), err);
    }
    $("view-invoices").dataset.loads = String(Number($("view-invoices").dataset.loads || 0) + 1);
  }

  onSubmit($("preview-form"), $("preview-error"), async (data) => {
    let preview;
    try {
      preview = await api("POST", "/v1/invoices/create_preview", { subscription: data.get("subscription") });
    } catch (err) {
      if (billingOff(err)) throw new Error("Billing not enabled on this service.");
      throw err;
    }
    const lines = (preview.lines && preview.lines.data) || [];
    $("preview-caption").textContent = `Preview for ${data.get("subscription")}`;
    $("preview-table").querySelector("tbody").replaceChildren(
      ...lines.map((line) => h("tr", {}, h("td", {}, line.description || line.id || ""), h("td", { class: "num" }, money(line.amount, line.currency || preview.currency))))
    );
    $("preview-total").textContent = money(preview.total, preview.currency);
    $("preview-result").hidden = false;
  });

  /* ---------- start ---------- */

  usageDefaults();
  window.dashboard = { api, state, route }; // for tests and the browser console
  const saved = sessionStorage.getItem(KEY);
  if (saved) {
    $("signin-form").hidden = true;
    $("loading").hidden = false;
    signIn(saved)
      .catch((err) => {
        sessionStorage.removeItem(KEY);
        showError($("signin-error"), err);
        route();
      })
      .finally(() => {
        $("signin-form").hidden = false;
        $("loading").hidden = true;
      });
  } else {
    route();
  }
})();
