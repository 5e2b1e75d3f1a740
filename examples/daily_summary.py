"""Read one customer's daily usage of a meter (the last N UTC days, today included).

    python examples/daily_summary.py --meter mtr_... --customer cus_123 --days 7

METERING_API_URL and METERING_API_KEY as in record_usage.py. Summaries are eventually
consistent: an event shows up about a second after its 200. Needs `pip install stripe`.
"""

import argparse
import os
import time
from datetime import UTC, datetime

import stripe

API_URL = os.environ.get("METERING_API_URL", "http://127.0.0.1:3000")
API_KEY = os.environ.get("METERING_API_KEY", "sk_test_local")
DAY = 86400


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--meter", required=True, help="meter id, mtr_...")
    parser.add_argument("--customer", required=True)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()

    client = stripe.StripeClient(API_KEY, base_addresses={"api": API_URL})
    now = int(time.time())
    end = now - now % DAY + DAY  # next UTC midnight: with value_grouping_window=day both ends are midnights
    start = end - args.days * DAY
    query = {"customer": args.customer, "start_time": start, "end_time": end}

    daily = client.v1.billing.meters.event_summaries.list(
        args.meter, {**query, "value_grouping_window": "day"}
    )
    for summary in daily.auto_paging_iter():  # newest day first; days without usage are absent
        day = datetime.fromtimestamp(summary.start_time, UTC).date()
        print(f"{day}  {summary.aggregated_value}")

    # Without a grouping window: exactly one summary for the whole range.
    (whole,) = client.v1.billing.meters.event_summaries.list(args.meter, query).data
    print(f"total  {whole.aggregated_value}")


if __name__ == "__main__":
    main()
