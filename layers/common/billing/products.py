"""Products: `POST/GET /v1/products`, `GET /v1/products/{id}`.

The id may be chosen by the caller, so a product is stored twice in one transaction:
under `PRODID#<id>` (lookup; the conditional put is the uniqueness check) and under
`PROD#<creation-ordered key>` (lists, newest first). Products cannot be changed here,
so the two copies never diverge.
"""

import time
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

from billing import events, storage
from billing.params import check_cursors, created_filter, in_range, new_metadata
from metering import store, wire
from metering.accounts import Principal
from metering.errors import invalid, not_found
from metering.ids import new_id
from metering.keys import key, part

if TYPE_CHECKING:
    from pydantic import BaseModel

LIST_PREFIX = "PROD#"


@cache
def _models() -> dict[str, Any]:
    """The request models, defined on first use: pydantic is imported only by a function that
    validates a request (BillingCycles imports this module and never does)."""
    from pydantic import Field

    from billing.params import Expand, Flag, ListParams, ObjectId, Strict

    Name = Annotated[str, Field(min_length=1, max_length=250)]

    class ProductData(Strict):
        """`product_data` of a price, and the body of a product create."""

        name: Name
        id: ObjectId | None = None
        active: Flag = True
        metadata: Any = None
        unit_label: Annotated[str, Field(max_length=12)] | None = None
        statement_descriptor: Annotated[str, Field(max_length=22)] | None = None
        tax_code: Annotated[str, Field(max_length=200)] | None = None

    class ProductCreate(ProductData):
        description: Annotated[str, Field(max_length=40000)] | None = None
        expand: Expand = None

    class ProductList(ListParams):
        active: Flag | None = None
        created: Any = None
        ids: list[ObjectId] | None = None

    return {
        "ProductData": ProductData,
        "ProductCreate": ProductCreate,
        "ProductList": ProductList,
        "Name": Name,
    }


_MODEL_NAMES = (
    "ProductData",
    "ProductCreate",
    "ProductList",
    "Name",
)
__getattr__ = wire.lazy_models(__name__, _models, _MODEL_NAMES)


def id_sk(product_id: str) -> str:
    return key("PRODID", part(product_id))


def to_object(item: dict) -> dict:
    return {
        "id": item["id"],
        "object": "product",
        "active": bool(item["active"]),
        "created": int(item["created"]),
        "default_price": None,
        "description": item.get("description"),
        "images": [],
        "livemode": bool(item["livemode"]),
        "marketing_features": [],
        "metadata": dict(item.get("metadata") or {}),
        "name": item["name"],
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": item.get("statement_descriptor"),
        "tax_code": item.get("tax_code"),
        "type": "service",
        "unit_label": item.get("unit_label"),
        "updated": int(item["created"]),
        "url": None,
    }


def new_product(who: Principal, spec: "BaseModel", param: str = "id") -> tuple[dict, list[dict]]:
    """The product object and the transaction steps that store it (id uniqueness included)."""
    product_id = spec.id or new_id("prod")
    if spec.id is not None and not spec.id.strip():
        raise invalid(f"Invalid {param}: must not be blank.", param)
    order = product_id if spec.id is None else new_id("prod")
    now = int(time.time())
    item = {
        "pk": storage.scope_pk(who.scope),
        "id": product_id,
        "order": order,
        "livemode": who.livemode,
        "created": now,
        "name": spec.name,
        "active": spec.active,
        "description": getattr(spec, "description", None),
        "metadata": new_metadata(spec.metadata),
        "unit_label": spec.unit_label,
        "statement_descriptor": spec.statement_descriptor,
        "tax_code": spec.tax_code,
    }
    steps = [
        storage.put_new({**item, "sk": id_sk(product_id)}),
        storage.put_new({**item, "sk": LIST_PREFIX + order}),
    ]
    return to_object(item), steps


def create(who: Principal, params: dict) -> dict:
    spec = wire.validate(_models()["ProductCreate"], params)
    product, steps = new_product(who, spec)
    pending = events.for_principal(who)
    try:
        storage.transact([*steps, pending.add("product.created", product)])
    except storage.Conflict:
        raise invalid(
            f"Product already exists with ID '{product['id']}'.", "id", "resource_already_exists"
        ) from None
    pending.publish()
    return product


def load(who: Principal, product_id: str, param: str = "id") -> dict:
    item = storage.find(who.scope, id_sk, product_id)
    if item is None:
        raise not_found(f"No such product: '{product_id}'", param)
    return item


def retrieve(who: Principal, product_id: str, params: dict) -> dict:
    wire.reject_unknown(params, {"expand"})
    return to_object(load(who, product_id))


def _order_of(who: Principal, product_id: str | None, param: str) -> str | None:
    if product_id is None:
        return None
    return load(who, product_id, param)["order"]


def list_products(who: Principal, params: dict) -> dict:
    spec = wire.validate(_models()["ProductList"], params)
    check_cursors(spec)
    span = created_filter(spec.created)
    ids = set(spec.ids) if spec.ids is not None else None

    def keep(item: dict) -> bool:
        return (
            (spec.active is None or bool(item["active"]) == spec.active)
            and (ids is None or item["id"] in ids)
            and in_range(int(item["created"]), span)
        )

    items, has_more = store.page(
        storage.table(),
        storage.scope_pk(who.scope),
        LIST_PREFIX,
        spec.limit,
        _order_of(who, spec.starting_after, "starting_after"),
        _order_of(who, spec.ending_before, "ending_before"),
        keep,
    )
    return wire.list_object("/v1/products", [to_object(i) for i in items], has_more)
