"""Request parameter types shared by the billing endpoints (pydantic, Stripe's limits).

Form bodies carry strings only (`true`, `12`), so booleans and integers are parsed
here from either strings or JSON values; every model forbids unknown parameters.
"""

from decimal import Decimal, InvalidOperation
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

from metering import wire
from metering.errors import invalid

if TYPE_CHECKING:
    from pydantic import BaseModel


MAX_METADATA_KEYS = 50
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500
MAX_ID = 200  # caller-chosen ids (products) and lookup keys


@cache
def _models() -> dict[str, Any]:
    """The request models and parameter types, defined on first use: pydantic is imported only
    by a function that validates a request (BillingCycles imports the billing modules and never
    does). `from billing.params import Strict` (or any of these names) defines them."""
    from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    Flag = Annotated[bool, BeforeValidator(_bool)]
    Text = Annotated[str, Field(max_length=5000)]
    ObjectId = Annotated[str, Field(min_length=1, max_length=MAX_ID), AfterValidator(_printable)]
    Expand = list[Annotated[str, Field(max_length=200)]] | None

    class CreatedRange(Strict):
        gt: int | None = None
        gte: int | None = None
        lt: int | None = None
        lte: int | None = None

    class ListParams(Strict):
        limit: int = Field(default=10, ge=1, le=100)
        starting_after: Annotated[str, Field(max_length=MAX_ID)] | None = None
        ending_before: Annotated[str, Field(max_length=MAX_ID)] | None = None
        expand: Expand = None

    return {
        "Strict": Strict,
        "CreatedRange": CreatedRange,
        "ListParams": ListParams,
        "Flag": Flag,
        "Text": Text,
        "ObjectId": ObjectId,
        "Expand": Expand,
    }


_MODEL_NAMES = (
    "Strict",
    "CreatedRange",
    "ListParams",
    "Flag",
    "Text",
    "ObjectId",
    "Expand",
)
__getattr__ = wire.lazy_models(__name__, _models, _MODEL_NAMES)


def _bool(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        raise ValueError("must be a boolean (true or false)")
    return value


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must contain only printable characters")
    return value


def metadata(value: Any, param: str = "metadata") -> dict[str, str] | None:
    """Validate Stripe metadata: up to 50 keys of at most 40 characters (no brackets) and
    values of at most 500. Returns a dict where "" means "unset this key", or None for an
    explicit `metadata=` (unset all)."""
    if value == "":
        return None
    if not isinstance(value, dict):
        raise invalid(f"Invalid {param}: must be an object of string keys and values.", param)
    if len(value) > MAX_METADATA_KEYS:
        raise invalid(f"Invalid {param}: at most {MAX_METADATA_KEYS} keys are allowed.", param)
    out = {}
    for k, v in value.items():
        name = f"{param}[{k}]"
        if not k or len(k) > MAX_METADATA_KEY or "[" in k or "]" in k:
            raise invalid(
                f"Invalid {name}: keys must be 1 to {MAX_METADATA_KEY} characters without '[' or ']'.", name
            )
        if isinstance(v, bool) or not isinstance(v, str | int | Decimal):
            raise invalid(f"Invalid {name}: must be a string.", name)
        text = str(v)
        if len(text) > MAX_METADATA_VALUE:
            raise invalid(
                f"Invalid {name}: must be at most {MAX_METADATA_VALUE} characters.",
                name,
                "string_length_exceeds_maximum",
            )
        out[k] = text
    return out


def new_metadata(value: Any) -> dict[str, str]:
    """Metadata on create: empty values are simply absent."""
    if value is None:
        return {}
    given = metadata(value)
    return {k: v for k, v in (given or {}).items() if v != ""}


def merged_metadata(current: dict, value: Any) -> dict[str, str]:
    """Metadata on update: merge keys, "" unsets one key, `metadata=` unsets all."""
    given = metadata(value)
    if given is None:
        return {}
    out = dict(current)
    for k, v in given.items():
        if v == "":
            out.pop(k, None)
        else:
            out[k] = v
    if len(out) > MAX_METADATA_KEYS:
        raise invalid(f"Invalid metadata: at most {MAX_METADATA_KEYS} keys are allowed.", "metadata")
    return out


def decimal_string(value: Any, param: str, places: int = 12, minimum: Decimal | None = Decimal(0)) -> Decimal:
    """A decimal amount given as a string (or number): plain notation, at most `places`
    decimal places, not below `minimum`."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise invalid(f"Invalid {param}: must be a decimal string.", param)
    text = str(value).strip()
    try:
        if not text or any(c in text.lower() for c in "en") or text.count(".") > 1:
            raise InvalidOperation
        number = Decimal(text)
    except InvalidOperation:
        raise invalid(f"Invalid {param}: {value!r} is not a decimal number.", param) from None
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise invalid(f"Invalid {param}: at most {places} decimal places are allowed.", param)
    if minimum is not None and number < minimum:
        raise invalid(f"Invalid {param}: must be at least {minimum}.", param)
    return number


def integer(value: Any, param: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool):
        raise invalid(f"Invalid integer: {value!r} for {param}.", param, "parameter_invalid_integer")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise invalid(
            f"Invalid integer: {value!r} for {param}.", param, "parameter_invalid_integer"
        ) from None
    if minimum is not None and number < minimum:
        raise invalid(f"Invalid {param}: must be at least {minimum}.", param)
    if maximum is not None and number > maximum:
        raise invalid(f"Invalid {param}: must be at most {maximum}.", param)
    return number


def created_filter(value: Any) -> "BaseModel | None":
    """`created` as an exact second or a {gt, gte, lt, lte} range."""
    if value is None:
        return None
    if isinstance(value, dict):
        from metering import wire

        return wire.validate(_models()["CreatedRange"], value)
    exact = integer(value, "created")
    return _models()["CreatedRange"](gte=exact, lte=exact)


def in_range(created: int, span: "BaseModel | None") -> bool:
    if span is None:
        return True
    return (
        (span.gt is None or created > span.gt)
        and (span.gte is None or created >= span.gte)
        and (span.lt is None or created < span.lt)
        and (span.lte is None or created <= span.lte)
    )


def check_cursors(spec: "BaseModel") -> None:
    if spec.starting_after and spec.ending_before:
        raise invalid(
            "You may only specify one of these parameters: ending_before, starting_after.",
            "ending_before",
            "parameters_exclusive",
        )
