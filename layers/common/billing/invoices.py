"""Invoices: preview, drafts, finalization, void, lists.

- Preview (`POST /v1/invoices/create_preview`): never stored; the current period of a
  live subscription so far, [period start, now), priced like a real invoice.
- Draft (`subscription_cycle`): created when a period ends (see `cycles`), with a
  snapshot of the usage; `automatically_finalizes_at` = created + the account's grace.
- Finalization (automatic or `POST /v1/invoices/{id}/finalize`): the lines are
  recomputed from every event received so far whose timestamp is in the period, the
  number is taken from the customer's sequence, and the invoice becomes `open` (`paid`
  when nothing is due). The stored lines are then frozen: nothing recomputes them.

Every state change is one transaction conditioned on the invoice's version (and on the
customer's, for the number), together with its events.
"""

import hashlib
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

from billing import account_settings, customers, events, invoice_lines, storage, subscriptions, test_clocks
from billing.params import check_cursors, created_filter, in_range, merged_metadata
from metering import wire
from metering.accounts import Principal
from metering.errors import StripeError, invalid, missing, not_found
from metering.ids import new_id

if TYPE_CHECKING:
    from pydantic import BaseModel

PREFIX = "IN#"
EMBEDDED_LINES = 10
MAX_SCHEDULE_SECONDS = 5 * 366 * 86400


@cache
def _models() -> dict[str, Any]:
    """The request models, defined on first use: pydantic is imported only by a function that
    validates a request (BillingCycles imports this module and never does)."""
    from pydantic import Field

    from billing.params import Expand, Flag, ListParams, ObjectId, Strict

    class PreviewParams(Strict):
        customer: ObjectId | None = None
        subscription: ObjectId | None = None
        expand: Expand = None

    class InvoiceUpdate(Strict):
        auto_advance: Flag | None = None
        automatically_finalizes_at: int | None = None
        description: Annotated[str, Field(max_length=1500)] | None = None
        metadata: Any = None
        expand: Expand = None

    class FinalizeParams(Strict):
        auto_advance: Flag | None = None
        expand: Expand = None

    class InvoiceList(ListParams):
        customer: ObjectId | None = None
        subscription: ObjectId | None = None
        status: Literal["draft", "open", "paid", "uncollectible", "void"] | None = None
        collection_method: Literal["charge_automatically", "send_invoice"] | None = None
        created: Any = None

    return {
        "PreviewParams": PreviewParams,
        "InvoiceUpdate": InvoiceUpdate,
        "FinalizeParams": FinalizeParams,
        "InvoiceList": InvoiceList,
    }


_MODEL_NAMES = (
    "PreviewParams",
    "InvoiceUpdate",
    "FinalizeParams",
    "InvoiceList",
)
__getattr__ = wire.lazy_models(__name__, _models, _MODEL_NAMES)


def sk(invoice_id: str) -> str:
    return PREFIX + invoice_id


def claim_sk(subscription_id: str, period_start: int) -> str:
    """One invoice per (subscription, period start): the key of its claim."""
    return f"INCLAIM#{subscription_id}#{int(period_start):010d}"


def _total(lines: list[dict]) -> int:
    return sum(int(line["amount"]) for line in lines)


def to_object(item: dict, lines_limit: int = EMBEDDED_LINES) -> dict:
    lines = item.get("lines") or []
    total = _total(lines)
    status = item["status"]
    paid = status == "paid"
    finalized = status in ("open", "paid", "uncollectible", "void")
    invoice_id = item["id"] if not item.get("preview") else None
    line_objects = [
        invoice_lines.to_object(
            line,
            invoice_id,
            item["subscription"],
            item["currency"],
            bool(item["livemode"]),
            item["period_start"],
            item["period_end"],
        )
        for line in lines[:lines_limit]
    ]
    return {
        "id": item["id"],
        "object": "invoice",
        "account_country": None,
        "account_name": None,
        "amount_due": total,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_remaining": 0 if paid or status == "void" else total,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": bool(item.get("auto_advance")),
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": _int(item.get("automatically_finalizes_at")),
        "billing_reason": item["billing_reason"],
        "collection_method": item["collection_method"],
        "created": int(item["created"]),
        "currency": item["currency"],
        "custom_fields": None,
        "customer": item["customer"],
        "customer_address": None,
        "customer_email": item.get("customer_email"),
        "customer_name": item.get("customer_name"),
        "customer_phone": item.get("customer_phone"),
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": item.get("description"),
        "discounts": [],
        "due_date": _int(item.get("due_date")),
        "effective_at": _int(item.get("finalized_at")),
        "ending_balance": 0 if finalized else None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {
            "object": "list",
            "data": line_objects,
            "has_more": len(lines) > lines_limit,
            "url": f"/v1/invoices/{item['id']}/lines",
        },
        "livemode": bool(item["livemode"]),
        "metadata": dict(item.get("metadata") or {}),
        "next_payment_attempt": None,
        "number": item.get("number"),
        "on_behalf_of": None,
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {
                "metadata": dict(item.get("subscription_metadata") or {}),
                "subscription": item["subscription"],
                "subscription_proration_date": None,
            },
        },
        "period_end": int(item["period_end"]),
        "period_start": int(item["period_start"]),
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": status,
        "status_transitions": {
            "finalized_at": _int(item.get("finalized_at")),
            "marked_uncollectible_at": None,
            "paid_at": _int(item.get("paid_at")),
            "voided_at": _int(item.get("voided_at")),
        },
        "subtotal": total,
        "subtotal_excluding_tax": total,
        "test_clock": item.get("test_clock"),
        "total": total,
        "total_discount_amounts": [],
        "total_excluding_tax": total,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": _int(item.get("created")) if not item.get("preview") else None,
    }


def _int(value) -> int | None:
    return None if value is None else int(value)


def new_item(
    who: Principal,
    subscription: dict,
    *,
    reason: str,
    start: int,
    end: int,
    created: int,
    lines: list[dict],
    auto_advance: bool,
    finalizes_at: int | None,
) -> dict:
    """A draft invoice of a subscription (stored form), indexed under its customer and, when
    it finalizes automatically, in the due index at `finalizes_at`."""
    invoice_id = new_id("in")
    item = {
        "pk": storage.scope_pk(who.scope),
        "sk": sk(invoice_id),
        "id": invoice_id,
        "account_id": who.account_id,
        "livemode": who.livemode,
        "customer": subscription["customer"],
        "subscription": subscription["id"],
        "subscription_metadata": dict(subscription.get("metadata") or {}),
        "status": "draft",
        "billing_reason": reason,
        "collection_method": subscription["collection_method"],
        "days_until_due": subscription.get("days_until_due"),
        "currency": subscription["currency"],
        "created": int(created),
        "period_start": int(start),
        "period_end": int(end),
        "auto_advance": auto_advance,
        "automatically_finalizes_at": finalizes_at if auto_advance else None,
        "lines": lines,
        "metadata": {},
        "test_clock": subscription.get("test_clock"),
        "ppk": storage.parent_key(who.scope, "CUS", subscription["customer"]),
        "psk": sk(invoice_id),
        "ver": 1,
    }
    return _scheduled(who, item)


def _scheduled(who: Principal, item: dict) -> dict:
    """Set or clear the invoice's finalization entry in the due index."""
    out = {k: v for k, v in item.items() if k not in ("dpk", "dsk")}
    if (
        out["status"] == "draft"
        and out.get("auto_advance")
        and out.get("automatically_finalizes_at") is not None
    ):
        partition = (
            storage.clock_partition(who.scope, out["test_clock"])
            if out.get("test_clock")
            else storage.shard_of(out["id"])
        )
        out["dpk"] = partition
        out["dsk"] = storage.due_sort(int(out["automatically_finalizes_at"]), storage.FINALIZE, out["id"])
    return out


def finalized_copy(item: dict, customer: dict, lines: list[dict], at: int, number: str) -> dict:
    """The invoice finalized at `at` with these (now frozen) lines and number."""
    total = _total(lines)
    status = "paid" if total == 0 else "open"
    out = {
        **item,
        "lines": lines,
        "status": status,
        "number": number,
        "finalized_at": int(at),
        "paid_at": int(at) if status == "paid" else None,
        "automatically_finalizes_at": None,
        "customer_email": customer.get("email"),
        "customer_name": customer.get("name"),
        "customer_phone": customer.get("phone"),
    }
    if out["collection_method"] == "send_invoice" and out.get("days_until_due") is not None:
        out["due_date"] = int(at) + int(out["days_until_due"]) * 86400
    return {k: v for k, v in out.items() if k not in ("dpk", "dsk")}


def finalization_events(pending: events.Pending, item: dict) -> list[dict]:
    obj = to_object(item)
    steps = [pending.add("invoice.finalized", obj)]
    if item["status"] == "paid":
        steps.append(pending.add("invoice.paid", obj))
    return steps


def load(who: Principal, invoice_id: str, param: str = "id") -> dict:
    item = storage.find(who.scope, sk, invoice_id)
    if item is None:
        raise not_found(f"No such invoice: '{invoice_id}'", param)
    return item


def retrieve(who: Principal, invoice_id: str, params: dict) -> dict:
    wire.reject_unknown(params, {"expand"})
    return to_object(load(who, invoice_id))


# --- preview ---------------------------------------------------------------------------


def _previewed_subscription(who: Principal, spec: "BaseModel") -> dict:
    if spec.subscription is not None:
        subscription = subscriptions.load(who, spec.subscription, "subscription")
        if spec.customer is not None and subscription["customer"] != spec.customer:
            raise invalid(
                f"The subscription '{spec.subscription}' does not belong to customer '{spec.customer}'.",
                "subscription",
            )
        return subscription
    if spec.customer is None:
        raise missing("customer")
    customer = customers.load(who, spec.customer, "customer")
    live = subscriptions.live_of_customer(who, customer)
    if len(live) > 1:
        raise invalid(
            f"The customer '{spec.customer}' has {len(live)} live subscriptions: pass `subscription` "
            "to choose the one to preview.",
            "subscription",
        )
    if not live:
        raise _none_upcoming(spec.customer)
    return live[0]


def _none_upcoming(customer_id: str) -> StripeError:
    return StripeError(
        f"No upcoming invoices for customer: {customer_id}",
        404,
        "invalid_request_error",
        "invoice_upcoming_none",
        should_retry=False,
    )


def preview(who: Principal, params: dict) -> dict:
    """The upcoming invoice of a live subscription: its current period so far, not stored."""
    spec = wire.validate(_models()["PreviewParams"], params)
    subscription = _previewed_subscription(who, spec)
    if subscription["status"] == "canceled":
        raise _none_upcoming(subscription["customer"])
    now = test_clocks.current_time(who, subscription.get("test_clock"))
    start, end = int(subscription["period_start"]), int(subscription["period_end"])
    usage_end = max(start, min(now, end))
    lines = invoice_lines.compute(who, subscription, start, usage_end)
    digest = hashlib.sha256(f"{subscription['id']}:{start}".encode()).hexdigest()[:24]
    for line in lines:
        line["id"] = "il_tmp_" + line["id"][3:]
    item = {
        "id": f"upcoming_in_{digest}",
        "preview": True,
        "livemode": who.livemode,
        "customer": subscription["customer"],
        "subscription": subscription["id"],
        "subscription_metadata": dict(subscription.get("metadata") or {}),
        "status": "draft",
        "billing_reason": "upcoming",
        "collection_method": subscription["collection_method"],
        "currency": subscription["currency"],
        "created": now,
        "period_start": start,
        "period_end": end,
        "auto_advance": False,
        "lines": lines,
        "test_clock": subscription.get("test_clock"),
    }
    invoice = to_object(item, lines_limit=len(lines))
    invoice["lines"]["url"] = "/v1/invoices/upcoming/lines"
    return invoice


# --- lists -----------------------------------------------------------------------------


def list_invoices(who: Principal, params: dict) -> dict:
    spec = wire.validate(_models()["InvoiceList"], params)
    check_cursors(spec)
    span = created_filter(spec.created)
    customer = spec.customer
    if spec.subscription is not None:
        subscription = subscriptions.load(who, spec.subscription, "subscription")
        if customer is not None and customer != subscription["customer"]:
            return wire.list_object("/v1/invoices", [], False)
        customer = subscription["customer"]

    def keep(item: dict) -> bool:
        return (
            (spec.subscription is None or item["subscription"] == spec.subscription)
            and (spec.status is None or item["status"] == spec.status)
            and (spec.collection_method is None or item["collection_method"] == spec.collection_method)
            and (customer is not None or not item.get("test_clock"))  # Stripe hides clocked ones
            and in_range(int(item["created"]), span)
        )

    parent = storage.parent_key(who.scope, "CUS", customer) if customer is not None else None
    items, has_more = storage.page_of(who.scope, PREFIX, spec, keep, parent)
    return wire.list_object("/v1/invoices", [to_object(i) for i in items], has_more)


def list_lines(who: Principal, invoice_id: str, params: dict) -> dict:
    from billing.params import ListParams

    spec = wire.validate(ListParams, params)
    check_cursors(spec)
    item = load(who, invoice_id)
    obj = to_object(item, lines_limit=len(item.get("lines") or []))
    data = obj["lines"]["data"]
    ids = [line["id"] for line in data]
    for cursor, param in ((spec.starting_after, "starting_after"), (spec.ending_before, "ending_before")):
        if cursor is not None and cursor not in ids:
            raise invalid(f"Invalid {param}: '{cursor}' is not a line of this invoice.", param)
    if spec.starting_after is not None:
        data = data[ids.index(spec.starting_after) + 1 :]
        page, has_more = data[: spec.limit], len(data) > spec.limit
    elif spec.ending_before is not None:
        data = data[: ids.index(spec.ending_before)]
        page, has_more = data[-spec.limit :], len(data) > spec.limit
    else:
        page, has_more = data[: spec.limit], len(data) > spec.limit
    return wire.list_object(f"/v1/invoices/{invoice_id}/lines", page, has_more)


# --- changes ---------------------------------------------------------------------------


def finalize(
    who: Principal, invoice_id: str, at: int | None = None, auto_advance: bool | None = None
) -> dict:
    """Finalize a draft: recompute and freeze its lines, number it, open (or pay) it.

    Returns the invoice; a non-draft is returned unchanged when `at` is given (a scheduled
    run that lost a race), and is a 400 for an API call (`at` None)."""
    for _ in range(8):
        item = load(who, invoice_id)
        if item["status"] != "draft":
            if at is not None:
                return to_object(item)
            raise invalid(
                "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                code="invoice_not_editable",
            )
        when = at if at is not None else test_clocks.current_time(who, item.get("test_clock"))
        subscription = subscriptions.load(who, item["subscription"])
        customer = customers.load(who, item["customer"], allow_deleted=True)
        ids = {line["subscription_item"]: line["id"] for line in item.get("lines") or []}
        lines = invoice_lines.compute(
            who, subscription, int(item["period_start"]), int(item["period_end"]), line_ids=ids
        )
        number, customer_after = customers.take_invoice_number(customer)
        done = finalized_copy(item, customer, lines, when, number)
        if auto_advance is not None:
            done["auto_advance"] = auto_advance
        pending = events.for_principal(who)
        try:
            storage.transact(
                [
                    storage.put_versioned(done, int(item["ver"])),
                    customers.replace(customer, customer_after, allow_deleted=True),
                    *finalization_events(pending, done),
                ]
            )
        except storage.Conflict:
            continue
        pending.publish()
        return to_object(done)
    raise storage.busy("invoice")


def finalize_api(who: Principal, invoice_id: str, params: dict) -> dict:
    spec = wire.validate(_models()["FinalizeParams"], params)
    return finalize(who, invoice_id, auto_advance=spec.auto_advance)


def void(who: Principal, invoice_id: str, params: dict) -> dict:
    wire.reject_unknown(params, {"expand"})
    for _ in range(5):
        item = load(who, invoice_id)
        if item["status"] == "void":
            return to_object(item)
        if item["status"] != "open":
            raise invalid(
                f"You can only void open invoices; this invoice is {item['status']}.",
                code="invoice_not_editable",
            )
        when = test_clocks.current_time(who, item.get("test_clock"))
        done = {**item, "status": "void", "voided_at": when}
        pending = events.for_principal(who)
        try:
            storage.transact(
                [
                    storage.put_versioned(done, int(item["ver"])),
                    pending.add("invoice.voided", to_object(done)),
                ]
            )
        except storage.Conflict:
            continue
        pending.publish()
        return to_object(done)
    raise storage.busy("invoice")


def update(who: Principal, invoice_id: str, params: dict) -> dict:
    spec = wire.validate(_models()["InvoiceUpdate"], params)
    for _ in range(5):
        item = load(who, invoice_id)
        before = to_object(item)
        changed = dict(item)
        draft_only = [n for n in ("auto_advance", "automatically_finalizes_at") if n in spec.model_fields_set]
        if draft_only and item["status"] != "draft":
            raise invalid(
                f"Only draft invoices can change {draft_only[0]}; this invoice is {item['status']}.",
                draft_only[0],
                "invoice_not_editable",
            )
        if item["status"] == "void" and spec.model_fields_set - {"expand"}:
            raise invalid("A void invoice can't be updated.", code="invoice_not_editable")
        now = test_clocks.current_time(who, item.get("test_clock"))
        if spec.automatically_finalizes_at is not None:
            at = spec.automatically_finalizes_at
            if not now < at <= now + MAX_SCHEDULE_SECONDS:
                raise invalid(
                    "automatically_finalizes_at must be in the future and at most 5 years away.",
                    "automatically_finalizes_at",
                )
            changed.update(automatically_finalizes_at=at, auto_advance=True)
        if spec.auto_advance is False:
            changed.update(auto_advance=False, automatically_finalizes_at=None)
        elif spec.auto_advance and changed.get("automatically_finalizes_at") is None:
            grace = account_settings.grace_seconds(who.scope)
            changed.update(
                auto_advance=True, automatically_finalizes_at=max(int(item["created"]) + grace, now)
            )
        if "description" in spec.model_fields_set:
            changed["description"] = spec.description or None
        if spec.metadata is not None:
            changed["metadata"] = merged_metadata(item.get("metadata") or {}, spec.metadata)
        changed = _scheduled(who, changed)
        after = to_object(changed)
        if after == before:
            return before
        if not events.save_update(who, changed, int(item["ver"]), "invoice.updated", before, after):
            continue
        return after
    raise storage.busy("invoice")
