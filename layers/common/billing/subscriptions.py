"""Subscriptions of metered prices: create, retrieve, list, update, cancel; items.

Periods live on the items (`current_period_start|end`), never on the subscription. All
items of a subscription share one billing cycle (same interval and interval count), so
the period is kept once on the subscription document and shown on every item. While a
subscription is active its document sits in the `due` index at its period end, where
the period close (`cycles`) finds it.

Creating a subscription also creates its first invoice (`subscription_create`): metered
usage is billed in arrears, so it is 0 and `paid` at once, numbered from the customer's
sequence, all in one transaction with the subscription, its item pointers, the
customer's counters and the events.
"""

from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

from billing import customers, edges, events, invoice_lines, periods, prices, storage, test_clocks
from billing.params import check_cursors, created_filter, in_range, merged_metadata, new_metadata
from metering import wire
from metering.accounts import Principal
from metering.errors import invalid, missing, not_found
from metering.ids import new_id

if TYPE_CHECKING:
    from pydantic import BaseModel

PREFIX = "SUB#"
ITEM_PREFIX = "SI#"
MAX_ITEMS = 20
STATUSES = ("active", "all", "canceled", "ended", "incomplete", "incomplete_expired", "past_due", "paused")
STATUSES += ("trialing", "unpaid")


@cache
def _models() -> dict[str, Any]:
    """The request models, defined on first use: pydantic is imported only by a function that
    validates a request (BillingCycles imports this module and never does)."""
    from pydantic import Field

    from billing.params import Expand, Flag, ListParams, ObjectId, Strict

    class ItemParam(Strict):
        price: ObjectId | None = None
        quantity: Any = None
        metadata: Any = None

    class BillingMode(Strict):
        type: Literal["classic", "flexible"]

    class SubscriptionCreate(Strict):
        customer: ObjectId | None = None
        items: list[ItemParam] | None = None
        billing_cycle_anchor: int | None = None
        backdate_start_date: int | None = None
        collection_method: Literal["charge_automatically", "send_invoice"] = "charge_automatically"
        days_until_due: int | None = Field(default=None, ge=0, le=730)
        cancel_at_period_end: Flag = False
        billing_mode: BillingMode | None = None
        description: Annotated[str, Field(max_length=500)] | None = None
        metadata: Any = None
        expand: Expand = None

    class SubscriptionUpdate(Strict):
        cancel_at_period_end: Flag | None = None
        description: Annotated[str, Field(max_length=500)] | None = None
        metadata: Any = None
        expand: Expand = None

    class CancellationDetails(Strict):
        comment: Annotated[str, Field(max_length=5000)] | None = None
        feedback: (
            Literal[
                "customer_service",
                "low_quality",
                "missing_features",
                "other",
                "switched_service",
                "too_complex",
                "too_expensive",
                "unused",
            ]
            | None
        ) = None

    class SubscriptionCancel(Strict):
        invoice_now: Flag = False
        prorate: Flag = False
        cancellation_details: CancellationDetails | None = None
        expand: Expand = None

    class SubscriptionList(ListParams):
        customer: ObjectId | None = None
        price: ObjectId | None = None
        status: Literal[STATUSES] | None = None  # type: ignore[valid-type]
        test_clock: ObjectId | None = None
        created: Any = None
        collection_method: Literal["charge_automatically", "send_invoice"] | None = None

    return {
        "ItemParam": ItemParam,
        "BillingMode": BillingMode,
        "SubscriptionCreate": SubscriptionCreate,
        "SubscriptionUpdate": SubscriptionUpdate,
        "CancellationDetails": CancellationDetails,
        "SubscriptionCancel": SubscriptionCancel,
        "SubscriptionList": SubscriptionList,
    }


_MODEL_NAMES = (
    "ItemParam",
    "BillingMode",
    "SubscriptionCreate",
    "SubscriptionUpdate",
    "CancellationDetails",
    "SubscriptionCancel",
    "SubscriptionList",
)
__getattr__ = wire.lazy_models(__name__, _models, _MODEL_NAMES)


def sk(subscription_id: str) -> str:
    return PREFIX + subscription_id


def item_sk(item_id: str) -> str:
    return ITEM_PREFIX + item_id


def _missing(subscription_id: str, param: str = "id"):
    return not_found(f"No such subscription: '{subscription_id}'", param)


def load(who: Principal, subscription_id: str, param: str = "id") -> dict:
    item = storage.find(who.scope, sk, subscription_id)
    if item is None:
        raise _missing(subscription_id, param)
    return item


def due_entry(who: Principal, item: dict) -> dict:
    """The subscription with its period-end entry in the due index (or none once canceled)."""
    out = {k: v for k, v in item.items() if k not in ("dpk", "dsk")}
    if out["status"] != "canceled":
        partition = (
            storage.clock_partition(who.scope, out["test_clock"])
            if out.get("test_clock")
            else storage.shard_of(out["id"])
        )
        out["dpk"] = partition
        out["dsk"] = storage.due_sort(int(out["period_end"]), storage.CLOSE, out["id"])
    return out


# --- objects ---------------------------------------------------------------------------


def item_object(subscription: dict, item: dict, price: dict | None) -> dict:
    return {
        "id": item["id"],
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": int(item["created"]),
        "current_period_end": int(subscription["period_end"]),
        "current_period_start": int(subscription["period_start"]),
        "discounts": [],
        "metadata": dict(item.get("metadata") or {}),
        "price": prices.to_object(price) if price else item["price"],
        "quantity": None,
        "subscription": subscription["id"],
        "tax_rates": [],
    }


def to_object(who: Principal, item: dict, price_items: dict | None = None) -> dict:
    price_items = (
        price_items if price_items is not None else prices.load_many(who, [i["price"] for i in item["items"]])
    )
    details = item.get("cancellation_details") or {}
    return {
        "id": item["id"],
        "object": "subscription",
        "application": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": int(item["billing_cycle_anchor"]),
        "billing_cycle_anchor_config": None,
        "billing_mode": {
            "type": item.get("billing_mode") or "flexible",
            "flexible": None,
            "updated_at": None,
        },
        "billing_thresholds": None,
        "cancel_at": _int(item.get("cancel_at")),
        "cancel_at_period_end": bool(item.get("cancel_at_period_end")),
        "canceled_at": _int(item.get("canceled_at")),
        "cancellation_details": {
            "comment": details.get("comment"),
            "feedback": details.get("feedback"),
            "reason": details.get("reason"),
        },
        "collection_method": item["collection_method"],
        "created": int(item["created"]),
        "currency": item["currency"],
        "customer": item["customer"],
        "days_until_due": _int(item.get("days_until_due")),
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": item.get("description"),
        "discounts": [],
        "ended_at": _int(item.get("ended_at")),
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {
            "object": "list",
            "data": [item_object(item, i, price_items.get(i["price"])) for i in item["items"]],
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={item['id']}",
        },
        "latest_invoice": item.get("latest_invoice"),
        "livemode": bool(item["livemode"]),
        "metadata": dict(item.get("metadata") or {}),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": None,
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": int(item["start_date"]),
        "status": item["status"],
        "test_clock": item.get("test_clock"),
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }


def _int(value) -> int | None:
    return None if value is None else int(value)


# --- create ----------------------------------------------------------------------------


def _checked_prices(who: Principal, spec: "BaseModel") -> list[dict]:
    if not spec.items:
        raise missing("items")
    if len(spec.items) > MAX_ITEMS:
        raise invalid(f"A subscription can have at most {MAX_ITEMS} items.", "items")
    chosen: list[dict] = []
    for i, entry in enumerate(spec.items):
        param = f"items[{i}][price]"
        if entry.price is None:
            raise missing(param)
        if entry.quantity is not None:
            raise invalid(
                "Quantity should not be specified where usage_type is `metered`. "
                f"Remove quantity from `items[{i}]`.",
                f"items[{i}][quantity]",
            )
        price = prices.load(who, entry.price, param)
        recurring = price.get("recurring")
        if not price["active"]:
            raise invalid("The price specified is inactive. This field only accepts active prices.", param)
        if not recurring:
            raise invalid(
                "The price specified is set to `type=one_time` but this field only accepts prices with "
                "`type=recurring`.",
                param,
            )
        if recurring["usage_type"] != "metered":
            raise invalid(
                "Only metered prices (recurring[usage_type]=metered) can be subscribed to here.", param
            )
        if any(p["id"] == price["id"] for p in chosen):
            raise invalid("Cannot add multiple subscription items with the same price.", param)
        if chosen:
            first = chosen[0]
            if price["currency"] != first["currency"]:
                raise invalid("All prices of a subscription must have the same currency.", param)
            same_cycle = (recurring["interval"], int(recurring["interval_count"])) == (
                first["recurring"]["interval"],
                int(first["recurring"]["interval_count"]),
            )
            if not same_cycle:
                raise invalid(
                    "All prices of a subscription must have the same recurring interval and interval_count.",
                    param,
                )
        chosen.append(price)
    return chosen


def _cycle(spec: "BaseModel", now: int, interval: str, count: int) -> tuple[int, int, int, int]:
    """(start_date, anchor, first period start, first period end)."""
    start = now
    if spec.backdate_start_date is not None:
        if spec.backdate_start_date >= now:
            raise invalid("backdate_start_date must be in the past.", "backdate_start_date")
        start = spec.backdate_start_date
    anchor = start
    if spec.billing_cycle_anchor is not None:
        anchor = spec.billing_cycle_anchor
        if anchor <= now:
            raise invalid("billing_cycle_anchor must be in the future.", "billing_cycle_anchor")
        if anchor > periods.boundary(start, interval, count, 1):
            raise invalid(
                "billing_cycle_anchor cannot be later than one billing interval after the start date.",
                "billing_cycle_anchor",
            )
    period_start, period_end = periods.first_period(start, anchor, interval, count)
    return start, anchor, period_start, period_end


def create(who: Principal, params: dict) -> dict:
    spec = wire.validate(_models()["SubscriptionCreate"], params)
    if spec.customer is None:
        raise missing("customer")
    if spec.collection_method == "send_invoice" and spec.days_until_due is None:
        raise invalid("days_until_due is required when collection_method is send_invoice.", "days_until_due")
    if spec.collection_method == "charge_automatically" and spec.days_until_due is not None:
        raise invalid("days_until_due is only allowed with collection_method=send_invoice.", "days_until_due")
    chosen = _checked_prices(who, spec)
    metadata = new_metadata(spec.metadata)
    item_metadata = [new_metadata(entry.metadata) for entry in spec.items or []]
    subscription_id = new_id("sub")
    item_ids = [new_id("si") for _ in chosen]
    for _ in range(8):
        customer = customers.load(who, spec.customer, "customer")
        customers.check_room(customer)
        now = test_clocks.current_time(who, customer.get("test_clock"))
        recurring = chosen[0]["recurring"]
        interval, count = recurring["interval"], int(recurring["interval_count"])
        start, anchor, period_start, period_end = _cycle(spec, now, interval, count)
        item = {
            "pk": storage.scope_pk(who.scope),
            "sk": sk(subscription_id),
            "id": subscription_id,
            "account_id": who.account_id,
            "livemode": who.livemode,
            "customer": customer["id"],
            "created": now,
            "start_date": start,
            "status": "active",
            "billing_cycle_anchor": anchor,
            "interval": interval,
            "interval_count": count,
            "currency": chosen[0]["currency"],
            "collection_method": spec.collection_method,
            "days_until_due": spec.days_until_due,
            "cancel_at_period_end": spec.cancel_at_period_end,
            "cancel_at": period_end if spec.cancel_at_period_end else None,
            "billing_mode": spec.billing_mode.type if spec.billing_mode else "flexible",
            "description": spec.description,
            "metadata": metadata,
            "test_clock": customer.get("test_clock"),
            "period_start": period_start,
            "period_end": period_end,
            "items": [
                {"id": si, "price": price["id"], "created": now, "metadata": meta}
                for si, price, meta in zip(item_ids, chosen, item_metadata, strict=True)
            ],
            "ppk": storage.parent_key(who.scope, "CUS", customer["id"]),
            "psk": sk(subscription_id),
            "ver": 1,
        }
        item = due_entry(who, item)
        invoice, customer_after = _first_invoice(who, item, customer, now)
        item["latest_invoice"] = invoice["id"]
        price_items = {p["id"]: p for p in chosen}
        pending = events.for_principal(who)
        subscription_obj = to_object(who, item, price_items)
        from billing import invoices

        invoice_obj = invoices.to_object(invoice)
        steps = [
            storage.put_new(item),
            *[
                storage.put_new({"pk": item["pk"], "sk": item_sk(si), "subscription": subscription_id})
                for si in item_ids
            ],
            customers.replace(customer, customer_after),
            *edges.steps_for_period(who, item, period_start, period_end),
            storage.put_new(invoice),
            pending.add("customer.subscription.created", subscription_obj),
            pending.add("invoice.created", invoice_obj),
            *invoices.finalization_events(pending, invoice),
        ]
        try:
            storage.transact(steps)
        except storage.Conflict:
            continue  # the customer changed meanwhile (another subscription, an invoice number)
        pending.publish()
        return expanded(who, subscription_obj, spec.expand)
    raise storage.busy("customer")


def _first_invoice(who: Principal, subscription: dict, customer: dict, now: int) -> tuple[dict, dict]:
    """The `subscription_create` invoice: usage is billed in arrears, so 0 and paid at once."""
    from billing import invoices

    start = int(subscription["period_start"])
    lines = invoice_lines.compute(who, subscription, start, start)
    draft = invoices.new_item(
        who,
        subscription,
        reason="subscription_create",
        start=start,
        end=start,
        created=now,
        lines=lines,
        auto_advance=False,
        finalizes_at=None,
    )
    for line in lines:
        line["amount"] = 0  # nothing is billed in advance, not even a tier's flat fee
    number, customer_after = customers.take_invoice_number(customers.with_subscriptions(customer, 1))
    done = invoices.finalized_copy(draft, customer, lines, now, number)
    done["auto_advance"] = False
    return done, customer_after


# --- read ------------------------------------------------------------------------------


def expanded(who: Principal, obj: dict, expand: Any) -> dict:
    """`expand[]=latest_invoice` embeds the invoice (other expansions are ignored)."""
    if isinstance(expand, list) and "latest_invoice" in expand and obj.get("latest_invoice"):
        from billing import invoices

        obj = {**obj, "latest_invoice": invoices.to_object(invoices.load(who, obj["latest_invoice"]))}
    return obj


def retrieve(who: Principal, subscription_id: str, params: dict) -> dict:
    wire.reject_unknown(params, {"expand"})
    return expanded(who, to_object(who, load(who, subscription_id)), params.get("expand"))


def retrieve_item(who: Principal, item_id: str, params: dict) -> dict:
    wire.reject_unknown(params, {"expand"})
    pointer = storage.find(who.scope, item_sk, item_id, consistent=False)
    if pointer is None:
        raise not_found(f"No such subscription item: '{item_id}'")
    subscription = load(who, pointer["subscription"])
    item = next(i for i in subscription["items"] if i["id"] == item_id)
    return item_object(subscription, item, prices.load(who, item["price"]))


def _status_matches(wanted: str | None, status: str) -> bool:
    if wanted is None:
        return status != "canceled"  # Stripe: by default, subscriptions that are not canceled
    if wanted == "all":
        return True
    if wanted == "ended":
        return status in ("canceled", "incomplete_expired")
    return status == wanted


def list_subscriptions(who: Principal, params: dict) -> dict:
    spec = wire.validate(_models()["SubscriptionList"], params)
    check_cursors(spec)
    span = created_filter(spec.created)

    def keep(item: dict) -> bool:
        return (
            _status_matches(spec.status, item["status"])
            and (spec.price is None or any(i["price"] == spec.price for i in item["items"]))
            and (spec.test_clock is None or item.get("test_clock") == spec.test_clock)
            and (spec.customer is not None or spec.test_clock is not None or not item.get("test_clock"))
            and (spec.collection_method is None or item["collection_method"] == spec.collection_method)
            and in_range(int(item["created"]), span)
        )

    parent = storage.parent_key(who.scope, "CUS", spec.customer) if spec.customer is not None else None
    items, has_more = storage.page_of(who.scope, PREFIX, spec, keep, parent)
    all_prices = prices.load_many(who, list({i["price"] for s in items for i in s["items"]}))
    return wire.list_object("/v1/subscriptions", [to_object(who, s, all_prices) for s in items], has_more)


def live_of_customer(who: Principal, customer: dict) -> list[dict]:
    """The customer's subscriptions that are not canceled (read back consistently)."""
    ppk = storage.parent_key(who.scope, "CUS", customer["id"])
    return [s for s in storage.children(ppk, PREFIX) if s["status"] != "canceled"]


# --- update and cancel -----------------------------------------------------------------


def update(who: Principal, subscription_id: str, params: dict) -> dict:
    spec = wire.validate(_models()["SubscriptionUpdate"], params)
    for _ in range(8):
        item = load(who, subscription_id)
        if item["status"] == "canceled":
            raise invalid("A canceled subscription can't be updated; create a new subscription instead.")
        before = to_object(who, item)
        changed = dict(item)
        if spec.cancel_at_period_end is not None:
            changed["cancel_at_period_end"] = spec.cancel_at_period_end
            changed["cancel_at"] = int(item["period_end"]) if spec.cancel_at_period_end else None
        if "description" in spec.model_fields_set:
            changed["description"] = spec.description or None
        if spec.metadata is not None:
            changed["metadata"] = merged_metadata(item.get("metadata") or {}, spec.metadata)
        after = to_object(who, changed)
        if after == before:
            return before
        if not events.save_update(
            who, changed, int(item["ver"]), "customer.subscription.updated", before, after
        ):
            continue  # the period rolled meanwhile: apply the change to the new state
        return after
    raise storage.busy("subscription")


def cancel(who: Principal, subscription_id: str, params: dict) -> dict:
    spec = wire.validate(_models()["SubscriptionCancel"], params)
    details = spec.cancellation_details.model_dump() if spec.cancellation_details else {}
    details["reason"] = "cancellation_requested"
    return cancel_now(who, load(who, subscription_id), spec.invoice_now, details)


def cancel_now(who: Principal, item: dict, invoice_now: bool, details: dict) -> dict:
    """Cancel at once. With `invoice_now`, the current period up to now becomes a final draft
    invoice (claimed like a cycle invoice, so a concurrent period close and this cancel
    never both bill the period); without it, that period's usage is not billed."""
    from billing import cycles

    for _ in range(8):
        item = load(who, item["id"])
        if item["status"] == "canceled":
            return to_object(who, item)
        now = test_clocks.current_time(who, item.get("test_clock"))
        customer = customers.load(who, item["customer"], allow_deleted=True)
        canceled = {
            **item,
            "status": "canceled",
            "canceled_at": now,
            "ended_at": now,
            "cancel_at": None,
            "cancellation_details": details,
        }
        canceled = due_entry(who, canceled)
        pending = events.for_principal(who)
        steps = []
        if invoice_now:
            start = int(item["period_start"])
            end = max(start, min(now, int(item["period_end"])))
            invoice, invoice_steps = cycles.period_invoice(
                who, item, start, end, created=now, reason="subscription_update", pending=pending
            )
            canceled["latest_invoice"] = invoice["id"]
            steps += invoice_steps
        canceled_obj = to_object(who, canceled)
        steps += [
            storage.put(
                {**canceled, "ver": int(item["ver"]) + 1},
                "ver = :ver AND period_start = :ps",
                {":ver": item["ver"], ":ps": item["period_start"]},
            ),
            customers.replace(customer, customers.with_subscriptions(customer, -1), allow_deleted=True),
            pending.add("customer.subscription.deleted", canceled_obj),
        ]
        try:
            storage.transact(steps)
        except storage.Conflict:
            continue
        pending.publish()
        return canceled_obj
    raise storage.busy("subscription")


def cancel_all_of_customer(who: Principal, customer: dict) -> None:
    """Cancel every live subscription of a customer being deleted (no final invoices)."""
    for subscription in live_of_customer(who, customer):
        cancel_now(who, subscription, False, {"reason": "cancellation_requested"})
