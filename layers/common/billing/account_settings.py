"""Per-account billing settings: the invoice finalization grace period.

Stripe keeps this in the Dashboard (no API), so here it is an admin setting
(`metering-admin set-grace-period`), stored in the main table next to the account's
keys, one item per account and mode: `ACCT#<scope>` / `BILLING#SETTINGS`.
Default 1 hour, from 0 to 72 hours.
"""

from metering import store
from metering.accounts import scope_of
from metering.config import settings
from metering.keys import key

DEFAULT_GRACE_SECONDS = 3600
MAX_GRACE_SECONDS = 72 * 3600
SETTINGS_SK = "BILLING#SETTINGS"


def grace_seconds(scope: str) -> int:
    item = store.get(settings().main_table, key("ACCT", scope), SETTINGS_SK)
    if item is None or item.get("grace_seconds") is None:
        return DEFAULT_GRACE_SECONDS
    return int(item["grace_seconds"])


def set_grace_seconds(account_id: str, livemode: bool, seconds: int) -> None:
    if not 0 <= seconds <= MAX_GRACE_SECONDS:
        raise ValueError("the grace period must be between 0 and 72 hours")
    from metering import aws

    aws.dynamodb().update_item(
        TableName=settings().main_table,
        Key=store.to_item({"pk": key("ACCT", scope_of(account_id, livemode)), "sk": SETTINGS_SK}),
        UpdateExpression="SET grace_seconds = :g",
        ExpressionAttributeValues=store.values({":g": int(seconds)}),
    )
