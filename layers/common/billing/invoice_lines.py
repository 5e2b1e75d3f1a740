"""Invoice lines of metered subscription items: usage over a period, priced.

One line per subscription item: `quantity_decimal` = max(0, the meter's aggregate for
the customer over [start, end)) (truncated to 12 decimal places), `quantity` its integer
part, `amount` the price's amount for that quantity rounded once. The usage is read
through `metering.usage.aggregate`: O(rollup buckets) plus the events of the two edge
minutes, never the period's events.
"""

import secrets
from decimal import Decimal

from billing import amounts, edges, prices, products, storage
from metering.accounts import Principal
from metering.wire import format_decimal


def _product_names(who: Principal, product_ids: set[str]) -> dict[str, str]:
    pk = storage.scope_pk(who.scope)
    found = storage.get_many([(pk, products.id_sk(p)) for p in product_ids])
    return {item["id"]: item["name"] for item in found.values()}


def compute(
    who: Principal, subscription: dict, start: int, end: int, line_ids: dict | None = None
) -> list[dict]:
    """The stored form of the lines for [start, end); `line_ids` (item id -> line id) keeps
    ids stable when a draft's lines are recomputed at finalization."""
    price_items = prices.load_many(who, [i["price"] for i in subscription["items"]])
    names = _product_names(who, {p["product"] for p in price_items.values()})
    edge = edges.load(who, subscription, start, end) if end > start else None
    lines = []
    for item in subscription["items"]:
        price = price_items[item["price"]]
        recurring = price.get("recurring") or {}
        meter = {"id": recurring["meter"], "formula": price["formula"]}
        kept = edge["taken"].get(item["id"]) if edge else None
        total = edges.aggregate(who, meter, subscription["customer"], start, end, kept) if end > start else 0
        quantity = amounts.line_quantity(total)
        amount = amounts.line_amount(prices.pricing_of(price), quantity)
        name = names.get(price["product"], price["product"])
        lines.append(
            {
                "id": (line_ids or {}).get(item["id"]) or "il_" + secrets.token_hex(12),
                "subscription_item": item["id"],
                "price": price["id"],
                "product": price["product"],
                "quantity": format_decimal(quantity),
                "amount": amount,
                "unit": price.get("unit") if price["billing_scheme"] == "per_unit" else None,
                "description": f"{format_decimal(quantity)} × {name}",
            }
        )
    return lines


def to_object(
    line: dict,
    invoice_id: str | None,
    subscription_id: str,
    currency: str,
    livemode: bool,
    start: int,
    end: int,
) -> dict:
    quantity = Decimal(line["quantity"])
    return {
        "id": line["id"],
        "object": "line_item",
        "amount": int(line["amount"]),
        "currency": currency,
        "description": line["description"],
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": livemode,
        "metadata": {},
        "parent": {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
                "subscription_item": line["subscription_item"],
            },
        },
        "period": {"start": int(start), "end": int(end)},
        "pretax_credit_amounts": [],
        "pricing": {
            "type": "price_details",
            "price_details": {"price": line["price"], "product": line["product"]},
            "unit_amount_decimal": line.get("unit"),
        },
        "quantity": int(quantity),
        "quantity_decimal": line["quantity"],
        "subscription": subscription_id,
        "subtotal": int(line["amount"]),
        "taxes": [],
    }
