"""`metering-admin`: create and revoke API keys in the deployed (or local) main table.

    metering-admin --table <MainTableName> create-key [--account acct_...] [--live]
    metering-admin --table <MainTableName> revoke-key sk_test_...

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
    args = parser.parse_args(argv)
    os.environ["MAIN_TABLE"] = args.table
    if args.endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint_url
    from metering import accounts

    if args.command == "create-key":
        secret, account = accounts.create_key(account_id=args.account, livemode=args.live)
        print(f"account: {account}\nsecret:  {secret}\n(store it now: only its hash is kept)")
        return 0
    if accounts.revoke_key(args.secret):
        print("revoked")
        return 0
    print("no such key", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
