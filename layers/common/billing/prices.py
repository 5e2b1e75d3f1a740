"""Prices: `POST/GET /v1/prices`, `GET/POST /v1/prices/{id}`.

Amounts, tiers, `recurring` and `transform_quantity` are fixed at creation; only
`active`, `metadata`, `nickname` and `lookup_key` change later. A metered price needs
an active meter of the same account and mode; the meter's formula is copied onto the
price (a meter's formula never changes), so invoices need no meter read. A lookup key
is claimed by one price at a time (`LOOKUP#<key>`, conditional put).
"""

import time
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

from billing import amounts, events, products, storage
from billing.params import (
    MAX_ID,
    check_cursors,
    created_filter,
    decimal_string,
    in_range,
    integer,
    merged_metadata,
    new_metadata,
)
from metering import meters, store, wire
from metering.accounts import Principal
from metering.errors import StripeError, invalid, missing, not_found
from metering.ids import new_id
from metering.keys import key, part
from metering.wire import format_decimal

if TYPE_CHECKING:
    from pydantic import BaseModel

PREFIX = "PRICE#"


@cache
def _models() -> dict[str, Any]:
    """The request models, defined on first use: pydantic is imported only by a function that
    validates a request (BillingCycles imports this module and never does)."""
    from pydantic import Field

    from billing.params import Expand, Flag, ListParams, ObjectId, Strict

    LookupKey = Annotated[str, Field(min_length=1, max_length=MAX_ID)]

    class Recurring(Strict):
        interval: Literal["day", "week", "month", "year"]
        interval_count: int = Field(default=1, ge=1)
        usage_type: Literal["licensed", "metered"] = "licensed"
        meter: ObjectId | None = None

    class TierParam(Strict):
        up_to: Any = None
        unit_amount: Any = None
        unit_amount_decimal: Any = None
        flat_amount: Any = None
        flat_amount_decimal: Any = None

    class TransformQuantity(Strict):
        divide_by: int = Field(ge=1)
        round: Literal["up", "down"]

    class PriceCreate(Strict):
        currency: Annotated[str, Field(pattern=r"^[A-Za-z]{3}$")]
        product: ObjectId | None = None
        product_data: products.ProductData | None = None
        recurring: Recurring | None = None
        billing_scheme: Literal["per_unit", "tiered"] = "per_unit"
        unit_amount: Any = None
        unit_amount_decimal: Any = None
        tiers_mode: Literal["graduated", "volume"] | None = None
        tiers: list[TierParam] | None = None
        transform_quantity: TransformQuantity | None = None
        active: Flag = True
        nickname: Annotated[str, Field(max_length=5000)] | None = None
        lookup_key: LookupKey | None = None
        metadata: Any = None
        tax_behavior: Literal["inclusive", "exclusive", "unspecified"] | None = None
        expand: Expand = None

    class PriceUpdate(Strict):
        active: Flag | None = None
        nickname: Annotated[str, Field(max_length=5000)] | None = None
        lookup_key: Annotated[str, Field(max_length=MAX_ID)] | None = None
        metadata: Any = None
        expand: Expand = None

    class RecurringFilter(Strict):
        interval: Literal["day", "week", "month", "year"] | None = None
        usage_type: Literal["licensed", "metered"] | None = None
        meter: ObjectId | None = None

    class PriceList(ListParams):
        active: Flag | None = None
        currency: Annotated[str, Field(max_length=3)] | None = None
        product: ObjectId | None = None
        type: Literal["one_time", "recurring"] | None = None
        lookup_keys: list[LookupKey] | None = None
        recurring: RecurringFilter | None = None
        created: Any = None

    return {
        "Recurring": Recurring,
        "TierParam": TierParam,
        "TransformQuantity": TransformQuantity,
        "PriceCreate": PriceCreate,
        "PriceUpdate": PriceUpdate,
        "RecurringFilter": RecurringFilter,
        "PriceList": PriceList,
        "LookupKey": LookupKey,
    }


_MODEL_NAMES = (
    "Recurring",
    "TierParam",
    "TransformQuantity",
    "PriceCreate",
    "PriceUpdate",
    "RecurringFilter",
    "PriceList",
    "LookupKey",
)
__getattr__ = wire.lazy_models(__name__, _models, _MODEL_NAMES)


def sk(price_id: str) -> str:
    return PREFIX + price_id


def lookup_sk(lookup_key: str) -> str:
    return key("LOOKUP", part(lookup_key))


def _amount_pair(unit: Any, unit_decimal: Any, param: str) -> Decimal | None:
    """One amount from `param` (integer) or `param_decimal` (decimal string), not both;
    `param` may be nested (`tiers[0][unit_amount]`)."""
    decimal_param = param[:-1] + "_decimal]" if param.endswith("]") else param + "_decimal"
    if unit is not None and unit_decimal is not None:
        raise invalid(
            f"Only one of {param} and {decimal_param} can be set.", decimal_param, "parameters_exclusive"
        )
    if unit is not None:
        return Decimal(integer(unit, param, minimum=0))
    if unit_decimal is not None:
        return decimal_string(unit_decimal, decimal_param)
    return None


def _tiers(spec: "BaseModel") -> list[dict]:
    if spec.tiers_mode is None:
        raise missing("tiers_mode")
    if not spec.tiers:
        raise missing("tiers")
    if spec.unit_amount is not None or spec.unit_amount_decimal is not None:
        raise invalid(
            "unit_amount is not allowed with billing_scheme=tiered; set amounts on the tiers.", "unit_amount"
        )
    if spec.transform_quantity is not None:
        raise invalid("transform_quantity cannot be combined with tiers.", "transform_quantity")
    out, previous = [], 0
    for i, tier in enumerate(spec.tiers):
        name = f"tiers[{i}]"
        last = i == len(spec.tiers) - 1
        if tier.up_to is None:
            raise missing(f"{name}[up_to]")
        if tier.up_to == "inf":
            if not last:
                raise invalid("Only the last tier may have up_to=inf.", f"{name}[up_to]")
            up_to = None
        else:
            up_to = integer(tier.up_to, f"{name}[up_to]", minimum=1)
            if last:
                raise invalid("The last tier must have up_to=inf.", f"{name}[up_to]")
            if up_to <= previous:
                raise invalid("Tiers must be in increasing order of up_to.", f"{name}[up_to]")
            previous = up_to
        unit = _amount_pair(tier.unit_amount, tier.unit_amount_decimal, f"{name}[unit_amount]")
        flat = _amount_pair(tier.flat_amount, tier.flat_amount_decimal, f"{name}[flat_amount]")
        if unit is None and flat is None:
            raise invalid(
                "Each tier needs a unit_amount or a flat_amount (or their _decimal forms).",
                f"{name}[unit_amount]",
            )
        out.append(
            {
                "up_to": up_to,
                "unit": None if unit is None else format_decimal(unit),
                "flat": None if flat is None else format_decimal(flat),
            }
        )
    return out


def _meter(who: Principal, recurring: "BaseModel") -> dict | None:
    if recurring.usage_type != "metered":
        if recurring.meter is not None:
            raise invalid(
                "recurring[meter] can only be set with recurring[usage_type]=metered.", "recurring[meter]"
            )
        return None
    if recurring.meter is None:
        raise invalid(
            "A metered price requires a meter: set recurring[meter] to an active billing meter.",
            "recurring[meter]",
            "parameter_missing",
        )
    try:
        meter = meters.load(who, recurring.meter, consistent=True)
    except StripeError as exc:
        if exc.status != 404:
            raise
        raise invalid(f"No such billing meter: '{recurring.meter}'", "recurring[meter]") from None
    if meter["status"] != "active":
        raise invalid(
            f"You can't attach a deactivated meter to a price: '{recurring.meter}' is inactive.",
            "recurring[meter]",
        )
    return meter


def create(who: Principal, params: dict) -> dict:
    spec = wire.validate(_models()["PriceCreate"], params)
    if (spec.product is None) == (spec.product_data is None):
        if spec.product is None:
            raise missing("product")
        raise invalid(
            "You may only specify one of these parameters: product, product_data.",
            "product_data",
            "parameters_exclusive",
        )
    if spec.recurring is not None:
        limit = {"day": 1095, "week": 156, "month": 36, "year": 3}[spec.recurring.interval]
        if spec.recurring.interval_count > limit:
            raise invalid(
                "The maximum billing interval is three years (3 years, 36 months, 156 weeks or 1095 days).",
                "recurring[interval_count]",
            )
    if spec.billing_scheme == "tiered":
        tiers, unit = _tiers(spec), None
    else:
        if spec.tiers is not None or spec.tiers_mode is not None:
            raise invalid("tiers and tiers_mode require billing_scheme=tiered.", "tiers")
        tiers = None
        unit = _amount_pair(spec.unit_amount, spec.unit_amount_decimal, "unit_amount")
        if unit is None:
            raise missing("unit_amount")
    meter = _meter(who, spec.recurring) if spec.recurring is not None else None

    steps: list[dict] = []
    if spec.product_data is not None:
        product, steps = products.new_product(who, spec.product_data, "product_data[id]")
        product_id = product["id"]
    else:
        product_id = products.load(who, spec.product, "product")["id"]
    price_id = new_id("price")
    item = {
        "pk": storage.scope_pk(who.scope),
        "sk": sk(price_id),
        "id": price_id,
        "livemode": who.livemode,
        "created": int(time.time()),
        "product": product_id,
        "currency": spec.currency.lower(),
        "active": spec.active,
        "nickname": spec.nickname,
        "lookup_key": spec.lookup_key,
        "metadata": new_metadata(spec.metadata),
        "tax_behavior": spec.tax_behavior or "unspecified",
        "billing_scheme": spec.billing_scheme,
        "unit": None if unit is None else format_decimal(unit),
        "tiers_mode": spec.tiers_mode,
        "tiers": tiers,
        "transform": spec.transform_quantity.model_dump() if spec.transform_quantity else None,
        "recurring": (
            {
                "interval": spec.recurring.interval,
                "interval_count": spec.recurring.interval_count,
                "usage_type": spec.recurring.usage_type,
                "meter": meter["id"] if meter else None,
            }
            if spec.recurring
            else None
        ),
        "formula": meter["formula"] if meter else None,
        "ver": 1,
    }
    if spec.lookup_key is not None:
        steps.append(storage.put_new({"pk": item["pk"], "sk": lookup_sk(spec.lookup_key), "price": price_id}))
    pending = events.for_principal(who)
    price = to_object(item)
    try:
        storage.transact([*steps, storage.put_new(item), pending.add("price.created", price)])
    except storage.Conflict:
        if spec.product_data is not None and spec.product_data.id is not None:
            existing = storage.get(who.scope, products.id_sk(spec.product_data.id))
            if existing is not None:
                raise invalid(
                    f"Product already exists with ID '{spec.product_data.id}'.", "product_data[id]"
                ) from None
        raise invalid(f"A price with lookup_key '{spec.lookup_key}' already exists.", "lookup_key") from None
    pending.publish()
    return _expanded(who, item, spec.expand)


def pricing_of(item: dict) -> amounts.Pricing:
    transform = item.get("transform") or {}
    return amounts.Pricing(
        scheme=item["billing_scheme"],
        unit=Decimal(item["unit"]) if item.get("unit") is not None else Decimal(0),
        tiers_mode=item.get("tiers_mode"),
        tiers=tuple(
            amounts.Tier(
                None if t.get("up_to") is None else int(t["up_to"]),
                Decimal(t["unit"]) if t.get("unit") is not None else Decimal(0),
                Decimal(t["flat"]) if t.get("flat") is not None else Decimal(0),
            )
            for t in item.get("tiers") or []
        ),
        divide_by=int(transform["divide_by"]) if transform else None,
        round=transform.get("round") if transform else None,
    )


def _integral(text: str | None) -> int | None:
    if text is None:
        return None
    value = Decimal(text)
    return int(value) if value == value.to_integral_value() else None


def _tier_object(tier: dict) -> dict:
    return {
        "flat_amount": _integral(tier.get("flat")),
        "flat_amount_decimal": tier.get("flat"),
        "unit_amount": _integral(tier.get("unit")),
        "unit_amount_decimal": tier.get("unit"),
        "up_to": None if tier.get("up_to") is None else int(tier["up_to"]),
    }


def to_object(item: dict, expand: list[str] | None = None) -> dict:
    recurring = item.get("recurring")
    per_unit = item["billing_scheme"] == "per_unit"
    transform = item.get("transform")
    obj = {
        "id": item["id"],
        "object": "price",
        "active": bool(item["active"]),
        "billing_scheme": item["billing_scheme"],
        "created": int(item["created"]),
        "currency": item["currency"],
        "custom_unit_amount": None,
        "livemode": bool(item["livemode"]),
        "lookup_key": item.get("lookup_key"),
        "metadata": dict(item.get("metadata") or {}),
        "nickname": item.get("nickname"),
        "product": item["product"],
        "recurring": (
            {
                "interval": recurring["interval"],
                "interval_count": int(recurring["interval_count"]),
                "meter": recurring.get("meter"),
                "trial_period_days": None,
                "usage_type": recurring["usage_type"],
            }
            if recurring
            else None
        ),
        "tax_behavior": item.get("tax_behavior") or "unspecified",
        "tiers_mode": item.get("tiers_mode"),
        "transform_quantity": (
            {"divide_by": int(transform["divide_by"]), "round": transform["round"]} if transform else None
        ),
        "type": "recurring" if recurring else "one_time",
        "unit_amount": _integral(item.get("unit")) if per_unit else None,
        "unit_amount_decimal": item.get("unit") if per_unit else None,
    }
    if expand and "tiers" in expand and not per_unit:
        obj["tiers"] = [_tier_object(t) for t in item.get("tiers") or []]
    return obj


def _expanded(who: Principal, item: dict, expand: list[str] | None) -> dict:
    obj = to_object(item, expand)
    if expand and "product" in expand:
        obj["product"] = products.to_object(products.load(who, item["product"]))
    return obj


def load(who: Principal, price_id: str, param: str = "id") -> dict:
    item = storage.find(who.scope, sk, price_id)
    if item is None:
        raise not_found(f"No such price: '{price_id}'", param)
    return item


def load_many(who: Principal, price_ids: list[str]) -> dict[str, dict]:
    pk = storage.scope_pk(who.scope)
    found = storage.get_many([(pk, sk(p)) for p in price_ids])
    return {item["id"]: item for item in found.values()}


def retrieve(who: Principal, price_id: str, params: dict) -> dict:
    wire.reject_unknown(params, {"expand"})
    expand = params.get("expand")
    return _expanded(who, load(who, price_id), expand if isinstance(expand, list) else None)


def update(who: Principal, price_id: str, params: dict) -> dict:
    spec = wire.validate(_models()["PriceUpdate"], params)
    for _ in range(5):
        item = load(who, price_id)
        before = to_object(item)
        updated = dict(item)
        if spec.active is not None:
            updated["active"] = spec.active
        if "nickname" in spec.model_fields_set:
            updated["nickname"] = spec.nickname or None
        if spec.metadata is not None:
            updated["metadata"] = merged_metadata(item.get("metadata") or {}, spec.metadata)
        steps = []
        if "lookup_key" in spec.model_fields_set and (spec.lookup_key or None) != item.get("lookup_key"):
            new_key = spec.lookup_key or None
            if item.get("lookup_key"):
                steps.append(
                    {
                        "Delete": {
                            "TableName": storage.table(),
                            "Key": store.to_item({"pk": item["pk"], "sk": lookup_sk(item["lookup_key"])}),
                            "ConditionExpression": "price = :me",
                            "ExpressionAttributeValues": store.values({":me": price_id}),
                        }
                    }
                )
            if new_key:
                steps.append(storage.put_new({"pk": item["pk"], "sk": lookup_sk(new_key), "price": price_id}))
            updated["lookup_key"] = new_key
        after = to_object(updated)
        if after == before:
            return _expanded(who, item, spec.expand)
        pending = events.for_principal(who)
        try:
            storage.transact(
                [
                    *steps,
                    storage.put_versioned(updated, int(item["ver"])),
                    pending.add("price.updated", after, events.changed(before, after)),
                ]
            )
        except storage.Conflict:
            if spec.lookup_key and storage.get(who.scope, lookup_sk(spec.lookup_key)) is not None:
                claim = storage.get(who.scope, lookup_sk(spec.lookup_key))
                if claim["price"] != price_id:
                    raise invalid(
                        f"A price with lookup_key '{spec.lookup_key}' already exists.", "lookup_key"
                    ) from None
            continue
        pending.publish()
        return _expanded(who, updated, spec.expand)
    raise storage.busy("price")


def list_prices(who: Principal, params: dict) -> dict:
    spec = wire.validate(_models()["PriceList"], params)
    check_cursors(spec)
    if spec.lookup_keys is not None and len(spec.lookup_keys) > 10:
        raise invalid("Invalid lookup_keys: at most 10 lookup keys are allowed.", "lookup_keys")
    span = created_filter(spec.created)
    wanted_keys = set(spec.lookup_keys) if spec.lookup_keys is not None else None
    recurring = spec.recurring

    def keep(item: dict) -> bool:
        r = item.get("recurring") or {}
        return (
            (spec.active is None or bool(item["active"]) == spec.active)
            and (spec.currency is None or item["currency"] == spec.currency.lower())
            and (spec.product is None or item["product"] == spec.product)
            and (spec.type is None or ("recurring" if r else "one_time") == spec.type)
            and (wanted_keys is None or item.get("lookup_key") in wanted_keys)
            and (
                recurring is None
                or (
                    bool(r)
                    and (recurring.interval is None or r["interval"] == recurring.interval)
                    and (recurring.usage_type is None or r["usage_type"] == recurring.usage_type)
                    and (recurring.meter is None or r.get("meter") == recurring.meter)
                )
            )
            and in_range(int(item["created"]), span)
        )

    items, has_more = storage.page_of(who.scope, PREFIX, spec, keep)
    return wire.list_object("/v1/prices", [to_object(i, spec.expand) for i in items], has_more)
