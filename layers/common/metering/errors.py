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

    def body(self) -> dict:
        error = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
        if self.param:
            error["param"] = self.param
        return {"error": error}


def invalid(message: str, param: str | None = None, code: str | None = None) -> StripeError:
    return StripeError(message, 400, "invalid_request_error", code, param, should_retry=False)


def missing(param: str) -> StripeError:
    return invalid(f"Missing required param: {param}.", param, "parameter_missing")


def unknown(param: str) -> StripeError:
    return invalid(f"Received unknown parameter: {param}", param, "parameter_unknown")


def not_found(message: str, param: str = "id") -> StripeError:
    return StripeError(message, 404, "invalid_request_error", "resource_missing", param, should_retry=False)


def unauthorized(message: str = "Invalid API Key provided.", code: str | None = None) -> StripeError:
    return StripeError(message, 401, "invalid_request_error", code)


def retryable(message: str = "The service is busy, please retry.") -> StripeError:
    return StripeError(message, 429, "api_error", "rate_limit", should_retry=True)
