"""SQS event sources (`Type: SQS` events of the template), driven locally.

The runner created the template's queues on its AWS endpoint; one poller per SQS event
source receives up to `BatchSize` (at most 10) messages and invokes the function with the
event Lambda sends (`Records` of `aws:sqs` messages). Messages the function processed are
deleted. With `ReportBatchItemFailures`, the messages it reports stay in the queue and come
back once their visibility timeout (the queue's `VisibilityTimeout` in the template,
default 30 s) is over; when the function raises, the whole batch comes back the same way.
Message delays (`DelaySeconds`) are the endpoint's. Redrive policies (dead-letter queues)
are not emulated: a message that keeps failing keeps coming back.

The runner's pollers long-poll (`WaitTimeSeconds`, as Lambda's pollers do): a message is
received as soon as it is sent, and an idle queue costs one request a second instead of
five.
"""

import logging
import threading

import boto3

log = logging.getLogger("metering_local.sqs")
DEFAULT_VISIBILITY = 30
LONG_POLL_SECONDS = 1  # short enough for the runner to stop promptly


def lambda_record(message: dict, queue_arn: str, region: str = "us-east-1") -> dict:
    """An SQS message as Lambda puts it in the event."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


class QueuePoller(threading.Thread):
    """Feeds one queue's messages to a function, until `stop` is set."""

    def __init__(
        self,
        queue_url: str,
        invoke,
        stop: threading.Event,
        batch_size: int = 10,
        visibility: int = DEFAULT_VISIBILITY,
        report_failures: bool = False,
        interval: float = 0.2,
        wait: int = 0,
    ):
        super().__init__(daemon=True, name=f"sqs-{queue_url.rsplit('/', 1)[-1]}")
        self.queue_url, self.invoke, self.stop = queue_url, invoke, stop
        self.batch_size = max(1, min(10, batch_size))
        self.visibility, self.report_failures, self.interval = visibility, report_failures, interval
        self.wait = wait  # WaitTimeSeconds of each receive (0: answer at once)
        self.sqs = boto3.client("sqs")
        self.queue_arn = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                received = self.poll()
            except Exception:
                log.exception("queue poll failed")
                self.stop.wait(max(self.interval, 0.5))
                continue
            if not received:
                self.stop.wait(self.interval)

    def poll(self) -> int:
        """Receive one batch and deliver it; the number of messages received."""
        out = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            VisibilityTimeout=self.visibility,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            WaitTimeSeconds=self.wait,
        )
        messages = out.get("Messages", [])
        if not messages:
            return 0
        event = {"Records": [lambda_record(m, self.queue_arn, self.sqs.meta.region_name) for m in messages]}
        try:
            result = self.invoke(event)
        except Exception:
            log.exception(
                "queue batch of %d messages failed; it comes back after its visibility timeout", len(messages)
            )
            return len(messages)
        failed = set()
        if self.report_failures and isinstance(result, dict):
            failed = {f.get("itemIdentifier") for f in result.get("batchItemFailures") or []}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(done)],
            )
        return len(messages)


def _queue_ref(props: dict) -> str:
    queue = props["Queue"]
    if isinstance(queue, dict) and "Fn::GetAtt" in queue:
        return queue["Fn::GetAtt"][0]
    return str(queue).split(".")[0]


def start(template, runtime, names, stop: threading.Event) -> list[threading.Thread]:
    """One poller per SQS event source in the template."""
    threads = []
    for logical_id, props in template.triggers("SQS"):
        logical_queue = _queue_ref(props)
        url = names.queues.get(logical_queue)
        if url is None:
            log.warning("queue %s of %s is not provisioned: not emulated", logical_queue, logical_id)
            continue
        queue_props = template.resources.get(logical_queue, {}).get("Properties", {})

        def invoke(event, _fn=logical_id):
            return runtime.invoke(_fn, event)

        poller = QueuePoller(
            url,
            invoke,
            stop,
            batch_size=int(props.get("BatchSize", 10)),
            visibility=int(queue_props.get("VisibilityTimeout", DEFAULT_VISIBILITY)),
            report_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
            interval=0,  # the long poll is the wait
            wait=LONG_POLL_SECONDS,
        )
        poller.start()
        threads.append(poller)
    return threads
