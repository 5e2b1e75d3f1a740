"""Customers: `/v1/customers`.

Metering does not need them (meter events name any customer string); a Customer is
what subscriptions and invoices hang on. A customer joins a test clock at creation and
stays on it. Deleting one cancels its live subscriptions first, then leaves a tombstone
(`{id, object, deleted: true}`) so the id is never reused.
"""

import hashlib
import time
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

from billing import events, storage, test_clocks
from billing.params import check_cursors, created_filter, in_range, merged_metadata, new_metadata
from metering import customer_clocks, store, wire
from metering.accounts import Principal
from metering.config import settings
from metering.errors import invalid, not_found
from metering.ids import new_id

if TYPE_CHECKING:
    from pydantic import BaseModel

PREFIX = "CUS#"
MAX_LIVE_SUBSCRIPTIONS = 500
MAX_CLOCKED_SUBSCRIPTIONS = 3


@cache
def _models() -> dict[str, Any]:
    """The request models, defined on first use: pydantic is imported only by a function that
    validates a request (BillingCycles imports this module and never does)."""
    from pydantic import Field

    from billing.params import Expand, ListParams, ObjectId, Strict

    Email = Annotated[str, Field(max_length=512)]
    Name = Annotated[str, Field(max_length=256)]
    Description = Annotated[str, Field(max_length=350)]
    Phone = Annotated[str, Field(max_length=20)]
    Prefix = Annotated[str, Field(pattern=r"^[A-Z0-9]{1,12}$")]

    class CustomerUpdate(Strict):
        email: Email | None = None
        name: Name | None = None
        description: Description | None = None
        phone: Phone | None = None
        invoice_prefix: Prefix | None = None
        metadata: Any = None
        expand: Expand = None

    class CustomerCreate(CustomerUpdate):
        test_clock: ObjectId | None = None  # only at creation, as at Stripe

    class CustomerList(ListParams):
        email: Email | None = None
        created: Any = None
        test_clock: ObjectId | None = None

    return {
        "CustomerCreate": CustomerCreate,
        "CustomerUpdate": CustomerUpdate,
        "CustomerList": CustomerList,
        "Email": Email,
        "Name": Name,
        "Description": Description,
        "Phone": Phone,
        "Prefix": Prefix,
    }


_MODEL_NAMES = (
    "CustomerCreate",
    "CustomerUpdate",
    "CustomerList",
    "Email",
    "Name",
    "Description",
    "Phone",
    "Prefix",
)
__getattr__ = wire.lazy_models(__name__, _models, _MODEL_NAMES)


def sk(customer_id: str) -> str:
    return PREFIX + customer_id


def _prefix_for(customer_id: str) -> str:
    """Stripe-like default invoice prefix: 8 upper-case hex characters derived from the id."""
    return hashlib.sha256(customer_id.encode()).hexdigest()[:8].upper()


def to_object(item: dict) -> dict:
    if item.get("deleted"):
        return {"id": item["id"], "object": "customer", "deleted": True}
    return {
        "id": item["id"],
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": int(item["created"]),
        "currency": item.get("currency"),
        "default_source": None,
        "delinquent": False,
        "description": item.get("description"),
        "discount": None,
        "email": item.get("email"),
        "invoice_prefix": item["invoice_prefix"],
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": bool(item["livemode"]),
        "metadata": dict(item.get("metadata") or {}),
        "name": item.get("name"),
        "next_invoice_sequence": int(item["next_invoice_sequence"]),
        "phone": item.get("phone"),
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": item.get("test_clock"),
    }


def load(who: Principal, customer_id: str, param: str = "id", allow_deleted: bool = False) -> dict:
    item = storage.find(who.scope, sk, customer_id)
    if item is None or (item.get("deleted") and not allow_deleted):
        raise not_found(f"No such customer: '{customer_id}'", param)
    return item


def create(who: Principal, params: dict) -> dict:
    spec = wire.validate(_models()["CustomerCreate"], params)
    customer_id = new_id("cus")
    for _ in range(5):
        item, operations = _new_customer(who, spec, customer_id)
        pending = events.for_principal(who)
        customer = to_object(item)
        operations += [storage.put_new(item), pending.add("customer.created", customer)]
        try:
            storage.transact(operations)
        except storage.Conflict:
            continue  # the clock gained a customer meanwhile: check its limit again
        pending.publish()
        return customer
    raise storage.busy("test clock")


def _new_customer(who: Principal, spec: "BaseModel", customer_id: str) -> tuple[dict, list[dict]]:
    item = {
        "pk": storage.scope_pk(who.scope),
        "sk": sk(customer_id),
        "id": customer_id,
        "account_id": who.account_id,
        "livemode": who.livemode,
        "created": int(time.time()),
        "email": spec.email,
        "name": spec.name,
        "description": spec.description,
        "phone": spec.phone,
        "metadata": new_metadata(spec.metadata),
        "invoice_prefix": spec.invoice_prefix or _prefix_for(customer_id),
        "next_invoice_sequence": 1,
        "live_subscriptions": 0,
        "ver": 1,
    }
    if spec.test_clock is None:
        return item, []
    clock = test_clocks.joinable(who, spec.test_clock)
    frozen = int(clock["frozen_time"])
    item.update(
        test_clock=clock["id"],
        created=frozen,
        ppk=storage.parent_key(who.scope, "CLK", clock["id"]),
        psk=sk(customer_id),
    )
    main = settings().main_table
    clocked = customer_clocks.customer_item(who.scope, customer_id, clock["id"], frozen)
    return item, [
        test_clocks.join_operation(who, clock),
        {"Put": {"TableName": main, "Item": store.to_item(clocked)}},
        {"Put": {"TableName": main, "Item": store.to_item(customer_clocks.guard_item(who.scope))}},
    ]


def retrieve(who: Principal, customer_id: str, params: dict) -> dict:
    wire.reject_unknown(params, {"expand"})
    return to_object(load(who, customer_id, allow_deleted=True))


def update(who: Principal, customer_id: str, params: dict) -> dict:
    spec = wire.validate(_models()["CustomerUpdate"], params)
    for _ in range(5):
        item = load(who, customer_id)
        before = to_object(item)
        changes = {
            name: getattr(spec, name)
            for name in ("email", "name", "description", "phone", "invoice_prefix")
            if name in spec.model_fields_set
        }
        if spec.metadata is not None:
            changes["metadata"] = merged_metadata(item.get("metadata") or {}, spec.metadata)
        updated = {**item, **changes}
        for name in ("email", "name", "description", "phone"):
            if updated.get(name) == "":
                updated[name] = None  # Stripe: posting an empty string unsets the field
        after = to_object(updated)
        if after == before:
            return before
        if not events.save_update(who, updated, int(item["ver"]), "customer.updated", before, after):
            continue  # changed meanwhile (a subscription, an invoice number): apply again
        return after
    raise storage.busy("customer")


def delete(who: Principal, customer_id: str, params: dict) -> dict:
    """Cancel the customer's live subscriptions (no final invoice), then delete it."""
    from billing import subscriptions

    wire.reject_unknown(params, set())
    for _ in range(10):
        item = load(who, customer_id)
        subscriptions.cancel_all_of_customer(who, item)
        item = load(who, customer_id)
        if int(item.get("live_subscriptions") or 0):
            time.sleep(0.05)  # the parent index has not caught up with a new subscription yet
            continue
        gone = {**item, "deleted": True, "deleted_at": int(time.time())}
        gone.pop("ppk", None)
        gone.pop("psk", None)
        pending = events.for_principal(who)
        operations = [
            storage.put(
                {**gone, "ver": int(item["ver"]) + 1},
                "ver = :ver AND live_subscriptions = :zero",
                {":ver": item["ver"], ":zero": 0},
            ),
            pending.add("customer.deleted", to_object(item)),
        ]
        try:
            storage.transact(operations)
        except storage.Conflict:
            continue
        pending.publish()
        return {"id": customer_id, "object": "customer", "deleted": True}
    raise storage.busy("customer")


def list_customers(who: Principal, params: dict) -> dict:
    spec = wire.validate(_models()["CustomerList"], params)
    check_cursors(spec)
    span = created_filter(spec.created)

    def keep(item: dict) -> bool:
        if item.get("deleted") or (spec.email is not None and item.get("email") != spec.email):
            return False
        if spec.test_clock is None and item.get("test_clock"):
            return False  # Stripe: clocked customers are listed only with the test_clock filter
        return in_range(int(item["created"]), span)

    parent = storage.parent_key(who.scope, "CLK", spec.test_clock) if spec.test_clock is not None else None
    items, has_more = storage.page_of(who.scope, PREFIX, spec, keep, parent)
    return wire.list_object("/v1/customers", [to_object(i) for i in items], has_more)


def check_room(customer: dict) -> None:
    """400 when the customer already has as many live subscriptions as allowed."""
    limit = MAX_CLOCKED_SUBSCRIPTIONS if customer.get("test_clock") else MAX_LIVE_SUBSCRIPTIONS
    count = int(customer.get("live_subscriptions") or 0)
    if count >= limit:
        where = " on a test clock." if customer.get("test_clock") else "."
        raise invalid(f"The customer already has {count} subscriptions, the most allowed{where}", "customer")


def with_subscriptions(customer: dict, delta: int) -> dict:
    return {**customer, "live_subscriptions": max(0, int(customer.get("live_subscriptions") or 0) + delta)}


def take_invoice_number(customer: dict) -> tuple[str, dict]:
    """The next invoice number (`PREFIX-0001`) and the customer with its sequence moved on."""
    sequence = int(customer["next_invoice_sequence"])
    number = f"{customer['invoice_prefix']}-{sequence:04d}"
    return number, {**customer, "next_invoice_sequence": sequence + 1}


def replace(before: dict, after: dict, allow_deleted: bool = False) -> dict:
    """Transaction step: write `after` if the customer is still `before` (and not deleted,
    unless `allow_deleted`: a deleted customer's pending drafts still get their numbers)."""
    condition = "ver = :ver" if allow_deleted else "ver = :ver AND attribute_not_exists(deleted)"
    return storage.put({**after, "ver": int(before["ver"]) + 1}, condition, {":ver": before["ver"]})
