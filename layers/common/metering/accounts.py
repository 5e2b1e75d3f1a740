"""Accounts and API keys.

A secret key is never stored: the table holds its SHA-256 under `KEY#<hash>`, which
maps it to its account. Lookups compare the stored hash with hmac.compare_digest.
"""

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from botocore.exceptions import ClientError

from metering import aws, store
from metering.config import settings
from metering.errors import unauthorized
from metering.keys import key

ACCOUNT_ID = re.compile(r"acct_[A-Za-z0-9]{1,40}")  # scopes and keys start with it: bounded, no separators


def scope_of(account_id: str, livemode: bool) -> str:
    """The tenancy key of one account in one mode: test and live data never share a key."""
    return f"{account_id}.{'live' if livemode else 'test'}"


@dataclass(frozen=True)
class Principal:
    account_id: str
    livemode: bool

    @property
    def scope(self) -> str:
        """Every storage key of what this caller owns starts with this (account and mode)."""
        return scope_of(self.account_id, self.livemode)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def livemode_of(secret: str) -> bool | None:
    if secret.startswith("sk_live_"):
        return True
    if secret.startswith("sk_test_"):
        return False
    return None


def authenticate(secret: str | None) -> Principal:
    """The account a secret key belongs to, or a 401."""
    if not secret:
        raise unauthorized(
            "You did not provide an API key. Provide it as 'Authorization: Bearer <key>' "
            "(or as the user name of HTTP Basic authentication)."
        )
    mode = livemode_of(secret)
    if mode is None:
        raise unauthorized()
    hashed = digest(secret)
    item = store.get(settings().main_table, key("KEY", hashed), "KEY")
    if item is None or not hmac.compare_digest(item.get("hash", ""), hashed) or item.get("revoked_at"):
        raise unauthorized()
    return Principal(item["account_id"], mode)


def bearer(header: str | None) -> str | None:
    """The credential of `Authorization: Bearer <credential>`, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def secret_key(header: str | None) -> str | None:
    """The secret key of an Authorization header: `Bearer <key>`, or HTTP Basic with the key
    as user name and any (usually empty) password, as `curl -u sk_test_...:` sends it."""
    token = bearer(header)
    if token or not header:
        return token
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, _, _password = decoded.partition(":")
    return user or None


def create_key(
    account_id: str | None = None, livemode: bool = False, secret: str | None = None
) -> tuple[str, str]:
    """Register a key (new secret unless one is given) for an account (new unless given).

    Returns (secret, account_id). Registering the same secret again is a no-op.
    """
    secret = secret or ("sk_live_" if livemode else "sk_test_") + secrets.token_urlsafe(32)
    if livemode_of(secret) is None:
        raise ValueError("secret keys start with sk_test_ or sk_live_")
    if account_id is not None and not ACCOUNT_ID.fullmatch(account_id):
        raise ValueError("account ids are acct_ and 1 to 40 letters or digits")
    account_id = account_id or "acct_" + digest(secret)[:16]
    hashed = digest(secret)
    now = int(time.time())
    table = settings().main_table
    account = {"pk": key("ACCT", account_id), "sk": "ACCOUNT", "id": account_id, "created": now}
    store.put_new(table, account | {"livemode": livemode_of(secret)})
    item = {
        "pk": key("KEY", hashed),
        "sk": "KEY",
        "hash": hashed,
        "account_id": account_id,
        "hint": secret[:8] + "..." + secret[-4:],
        "created": now,
    }
    if not store.put_new(table, item):
        existing = store.get(table, key("KEY", hashed), "KEY", consistent=True)
        if existing["account_id"] != account_id:
            raise ValueError("this secret already belongs to another account")
    return secret, account_id


def revoke_key(secret: str) -> bool:
    """Revoke a key; True if it existed."""
    try:
        aws.dynamodb().update_item(
            TableName=settings().main_table,
            Key=store.to_item({"pk": key("KEY", digest(secret)), "sk": "KEY"}),
            UpdateExpression="SET revoked_at = :now",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues=store.values({":now": int(time.time())}),
        )
    except ClientError as exc:
        if store.error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True
