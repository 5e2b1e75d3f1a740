"""Record usage with the official Stripe SDK against this service (local or deployed).

    # local: `make serve` in another terminal, then
    python examples/record_usage.py --customer cus_123 --value 25
    # deployed: the stack's ApiUrl output and a key made with metering-admin
    METERING_API_URL=https://abc123.execute-api.us-east-1.amazonaws.com/v1api \
    METERING_API_KEY=sk_test_... python examples/record_usage.py --customer cus_123 --value 25

Finds (or creates) a `sum` meter for the event name, records one event with
`POST /v1/billing/meter_events`, then a batch through a v2 meter event session and the
high-throughput `POST /v2/billing/meter_event_stream`. Needs `pip install stripe`.
"""

import argparse
import os
import uuid

import stripe

API_URL = os.environ.get("METERING_API_URL", "http://127.0.0.1:3000")
API_KEY = os.environ.get("METERING_API_KEY", "sk_test_local")


def find_or_create_meter(client: stripe.StripeClient, event_name: str):
    for meter in client.v1.billing.meters.list({"limit": 100}).auto_paging_iter():
        if meter.event_name == event_name:
            return meter
    return client.v1.billing.meters.create(
        {
            "display_name": event_name.replace("_", " ").capitalize(),
            "event_name": event_name,
            "default_aggregation": {"formula": "sum"},
            # the defaults, spelled out: which payload keys hold the customer and the value
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--event-name", default="api_requests")
    parser.add_argument("--customer", default="cus_123")
    parser.add_argument("--value", default="25", help="a decimal string, e.g. 25 or 0.5")
    parser.add_argument("--stream", type=int, default=3, help="events to send through the v2 stream")
    args = parser.parse_args()

    client = stripe.StripeClient(API_KEY, base_addresses={"api": API_URL})
    meter = find_or_create_meter(client, args.event_name)
    print(f"meter: {meter.id} ({meter.event_name}, {meter.default_aggregation.formula})")

    # One event. The identifier makes a retry safe: the same identifier never counts twice.
    event = client.v1.billing.meter_events.create(
        {
            "event_name": args.event_name,
            "identifier": f"req_{uuid.uuid4().hex}",
            "payload": {"stripe_customer_id": args.customer, "value": args.value},
        }
    )
    print(f"v1 event: {event.identifier} at {event.timestamp}")

    # Many events: a 15-minute session token, then batches of up to 100 on the stream.
    if args.stream:
        session = client.v2.billing.meter_event_session.create()
        stream = stripe.StripeClient(session.authentication_token, base_addresses={"meter_events": API_URL})
        stream.v2.billing.meter_event_stream.create(
            {
                "events": [
                    {
                        "event_name": args.event_name,
                        "identifier": f"req_{uuid.uuid4().hex}",
                        "payload": {"stripe_customer_id": args.customer, "value": args.value},
                    }
                    for _ in range(args.stream)
                ]
            }
        )
        print(f"v2 stream: {args.stream} events")


if __name__ == "__main__":
    main()
