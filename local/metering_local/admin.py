"""`metering-admin`: create and revoke API keys in the deployed (or local) main table.

    metering-admin --table <MainTableName> create-key [--account acct_...] [--live]
    metering-admin --table <MainTableName> revoke-key sk_test_...
    metering-admin --table <MainTableName> set-grace-period --account acct_... --hours 2 [--mode both]

Uses the usual AWS credentials; `--endpoint-url` targets a local endpoint.
"""

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="metering-admin", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--table", required=True, help="the MainTableName output of the stack")
    parser.add_argument("--endpoint-url")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create-key", help="create a key; prints the secret once")
    create.add_argument("--account", help="existing account id (default: a new account)")
    create.add_argument("--live", action="store_true", help="sk_live_ key (livemode true)")
    revoke = sub.add_parser("revoke-key", help="revoke a key")
    revoke.add_argument("secret")
    grace = sub.add_parser(
        "set-grace-period", help="invoice finalization grace period of an account (default 1 hour)"
    )
    grace.add_argument("--account", required=True, help="the account id (acct_...)")
    grace.add_argument("--hours", type=float, required=True, help="0 to 72 (fractions allowed)")
    grace.add_argument("--mode", choices=["test", "live", "both"], default="both", help="default: both")
    args = parser.parse_args(argv)
    os.environ["MAIN_TABLE"] = args.table
    if args.endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint_url
    from metering import accounts

    if args.command == "create-key":
        secret, account = accounts.create_key(account_id=args.account, livemode=args.live)
        print(f"account: {account}\nsecret:  {secret}\n(store it now: only its hash is kept)")
        return 0
    if args.command == "set-grace-period":
        return _set_grace_period(args.account, args.hours, args.mode)
    if accounts.revoke_key(args.secret):
        print("revoked")
        return 0
    print("no such key", file=sys.stderr)
    return 1


def _set_grace_period(account_id: str, hours: float, mode: str) -> int:
    from billing import account_settings

    seconds = round(hours * 3600)
    if not 0 <= seconds <= account_settings.MAX_GRACE_SECONDS:
        print("the grace period must be between 0 and 72 hours", file=sys.stderr)
        return 2
    for livemode in {"test": [False], "live": [True], "both": [False, True]}[mode]:
        account_settings.set_grace_seconds(account_id, livemode, seconds)
    print(f"grace period of {account_id} ({mode}): {seconds} seconds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
