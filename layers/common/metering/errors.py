"""Stripe-shaped errors. Every failure the API reports is one of these."""

from dataclasses import dataclass


@dataclass
class StripeError(Exception):
    message: str
    status: int = 400
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    should_retry: bool | None = None
    doc_url: str | None = None

    def body(self) -> dict:
        # Stripe's error object bounds message (40,000) and param (5,000 characters).
        error = {"type": self.type, "message": _clip(self.message, 40_000)}
        if self.code:
            error["code"] = self.code
        if self.param:
            error["param"] = _clip(self.param, 5_000)
        if self.doc_url:
            error["doc_url"] = self.doc_url
        return {"error": error}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def invalid(message: str, param: str | None = None, code: str | None = None) -> StripeError:
    return StripeError(message, 400, "invalid_request_error", code, param, should_retry=False)


def missing(param: str) -> StripeError:
    return invalid(f"Missing required param: {param}.", param, "parameter_missing")


def unknown(param: str) -> StripeError:
    return invalid(f"Received unknown parameter: {_clip(param, 200)}", param, "parameter_unknown")


def not_found(message: str, param: str = "id") -> StripeError:
    return StripeError(message, 404, "invalid_request_error", "resource_missing", param, should_retry=False)


def unauthorized(message: str = "Invalid API Key provided.", code: str | None = None) -> StripeError:
    return StripeError(message, 401, "invalid_request_error", code)


def retryable(message: str = "The service is busy, please retry.") -> StripeError:
    return StripeError(message, 429, "api_error", "rate_limit", should_retry=True)


def idempotency_mismatch(idem_key: str) -> StripeError:
    return StripeError(
        "Keys for idempotent requests can only be used with the same parameters they were first used "
        f"with. Try using a key other than '{idem_key}' if you meant to execute a different request.",
        400,
        "idempotency_error",
        should_retry=False,
    )
