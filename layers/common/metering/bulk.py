"""Bulk usage upload: an S3 object under `uploads/<account id>/` becomes meter events.

One progress item per object version (main table `ACCT#<acct>` / `IMPORT#<etag>#<key>`)
makes a file count once: a notification delivered again for a finished file does
nothing, a crash or a timeout resumes from the last checkpoint. Rows are checked like v1
events and written through the ingest core in batches; each row is tagged with its
source (object ETag and row number), so rows written again after a resume are
recognised as the same write, while the same rows uploaded under another name are
duplicates. Rows without identifier get one derived from the ETag and row number.

Rejected rows of each segment (CHECKPOINT_ROWS rows) go to a part object written before
the checkpoint moves past it, so a resumed segment rewrites the same part; at the end
the parts become `results/<path>.errors.csv` and `results/<path>.result.json` is written.
"""

import csv
import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.streaming import S3Object
from botocore.exceptions import ClientError

from metering import aws, clock, error_reports, event_store, notifications, store
from metering.bulk_rows import FileProblem, file_format, rows
from metering.config import settings
from metering.errors import StripeError
from metering.keys import key, part
from metering.meter_events import Rejected, check, parse_unix
from metering.observability import logger

UPLOADS, RESULTS = "uploads/", "results/"
BATCH_ROWS = 500
WRITERS = 64  # concurrent conditional writes per batch (the client pool holds 64 connections)
CHECKPOINT_ROWS = 5000
LOW_TIME_MS = 120_000
LEASE_SECONDS = 960


@dataclass
class Progress:
    """Counters up to the checkpoint row, as stored in the progress item."""

    row: int = 0
    records: int = 0
    ingested: int = 0
    errors: int = 0
    parts: list[int] = field(default_factory=list)
    status: str = "running"
    lease: int = 0

    @classmethod
    def from_item(cls, item: dict) -> "Progress":
        return cls(
            int(item["row"]),
            int(item["records"]),
            int(item["ingested"]),
            int(item["errors"]),
            [int(p) for p in item.get("parts", [])],
            item["status"],
            int(item.get("lease", 0)),
        )


@dataclass(frozen=True)
class Upload:
    bucket: str
    key: str
    etag: str
    account_id: str
    path: str  # the key after uploads/

    @property
    def progress_key(self) -> dict:
        return {"pk": key("ACCT", self.account_id), "sk": key("IMPORT", self.etag, part(self.path))}

    def result_key(self, suffix: str) -> str:
        return f"{RESULTS}{self.path}{suffix}"

    def part_key(self, first_row: int) -> str:
        return f"{RESULTS}.parts/{self.etag}/{part(self.path)}/{first_row:012d}.csv"


def parse_upload(bucket: str, object_key: str, etag: str) -> Upload | None:
    """The upload an object key names, or None for keys outside uploads/."""
    if not object_key.startswith(UPLOADS):
        return None
    account_id, _, rest = object_key[len(UPLOADS) :].partition("/")
    return Upload(bucket, object_key, etag.strip('"'), account_id, f"{account_id}/{rest}")


def _account(account_id: str) -> dict | None:
    return store.get(settings().main_table, key("ACCT", account_id), "ACCOUNT")


def _claim(upload: Upload, resuming: bool) -> Progress | None:
    """Take (or renew) the lease on the file's progress; None when there is nothing to do."""
    table, now = settings().main_table, int(time.time())
    k = upload.progress_key
    current = store.get(table, k["pk"], k["sk"], consistent=True)
    if current is None:
        item = {**k, "row": 0, "records": 0, "ingested": 0, "errors": 0, "parts": [], "status": "running"}
        item |= {"file": upload.key, "lease": now + LEASE_SECONDS}
        return Progress(lease=now + LEASE_SECONDS) if store.put_new(table, item) else None
    progress = Progress.from_item(current)
    if progress.status != "running" or (progress.lease > now and not resuming):
        return None  # finished, or another invocation holds it
    try:
        _update(
            upload, "SET lease = :new", "lease = :old", {":new": now + LEASE_SECONDS, ":old": progress.lease}
        )
    except ClientError as exc:
        if store.error_code(exc) == "ConditionalCheckFailedException":
            return None
        raise
    progress.lease = now + LEASE_SECONDS
    return progress


def _update(upload: Upload, expression: str, condition: str, values: dict) -> None:
    aws.dynamodb().update_item(
        TableName=settings().main_table,
        Key=store.to_item(upload.progress_key),
        UpdateExpression=expression,
        ConditionExpression=condition,
        ExpressionAttributeValues=store.values(values),
    )


def _checkpoint(upload: Upload, progress: Progress, status: str = "running") -> None:
    """Move the checkpoint forward, only while this invocation still holds the lease."""
    values = {
        ":row": progress.row,
        ":records": progress.records,
        ":ingested": progress.ingested,
        ":errors": progress.errors,
        ":parts": progress.parts,
        ":status": status,
        ":lease": progress.lease,
        ":running": "running",
    }
    aws.dynamodb().update_item(
        TableName=settings().main_table,
        Key=store.to_item(upload.progress_key),
        UpdateExpression="SET #r = :row, records = :records, ingested = :ingested, errors = :errors, "
        "parts = :parts, #s = :status",
        ConditionExpression="lease = :lease AND #s = :running",
        ExpressionAttributeNames={"#r": "row", "#s": "status"},
        ExpressionAttributeValues=store.values(values),
    )


@dataclass
class Segment:
    """Rows between two checkpoints: what they did, and the rejected ones."""

    first_row: int
    records: int = 0
    ingested: int = 0
    errors: list[tuple[int, str, str, str]] = field(default_factory=list)
    failures: list[error_reports.Failure] = field(default_factory=list)

    def reject(self, number: int, fields, code: str, message: str) -> None:
        identifier = fields.get("identifier", "") if isinstance(fields, dict) else ""
        self.errors.append((number, str(identifier or ""), code, message))
        name = fields.get("event_name", "") if isinstance(fields, dict) else ""
        self.failures.append(error_reports.Failure(str(name or ""), identifier or None, code, message))


def _check_rows(upload: Upload, livemode: bool, batch: list, segment: Segment) -> tuple[list, list]:
    accepted, sources = [], []
    for number, fields in batch:
        segment.records += 1
        if not isinstance(fields, dict):
            reason = fields if isinstance(fields, str) else "Each row must be a JSON object."
            segment.reject(number, {}, "invalid_row", reason)
            continue
        fields = {
            k: v for k, v in fields.items() if k in ("event_name", "timestamp", "identifier", "payload")
        }
        fields.setdefault("identifier", f"{upload.etag}-{number}")
        try:
            accepted.append(check(upload.account_id, livemode, fields, parse_unix(fields.get("timestamp"))))
            sources.append(f"{upload.key}#{upload.etag}#{number}")
        except StripeError as exc:
            segment.reject(number, fields, exc.code or "invalid_request", exc.message)
    return accepted, sources


def _write(accepted: list, sources: list, segment: Segment) -> None:
    results = event_store.record_many(accepted, workers=WRITERS, sources=sources)
    for event, source, result in zip(accepted, sources, results, strict=True):
        if isinstance(result, Rejected):
            fields = {"identifier": event.identifier, "event_name": event.event_name}
            segment.reject(int(source.rsplit("#", 1)[1]), fields, result.code, result.message)
        else:
            segment.ingested += 1


def _save_part(upload: Upload, segment: Segment) -> None:
    body = io.StringIO()
    csv.writer(body).writerows(sorted(segment.errors))
    aws.s3().put_object(
        Bucket=upload.bucket, Key=upload.part_key(segment.first_row), Body=body.getvalue().encode()
    )


def _batches(numbered: Iterator, size: int) -> Iterator[list]:
    batch = []
    for row in numbered:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def process(upload: Upload, remaining_ms: Callable[[], int], resuming: bool = False) -> dict | None:
    """Ingest (the rest of) a file. Returns a continuation event when time ran low, else None."""
    started = clock.now()
    account = _account(upload.account_id)
    progress = _claim(upload, resuming)
    if progress is None:
        return None
    if account is None:
        return _finish(upload, progress, f"Unknown account {upload.account_id} in the upload path.", False)
    livemode = bool(account.get("livemode", False))
    try:
        return _ingest(upload, progress, livemode, remaining_ms, started)
    except Exception:
        _release(upload, progress)  # let the retried notification resume from the checkpoint
        raise


def _release(upload: Upload, progress: Progress) -> None:
    try:
        _update(upload, "SET lease = :zero", "lease = :mine", {":zero": 0, ":mine": progress.lease})
    except ClientError:
        logger.exception("could not release the upload lease", extra={"file": upload.key})


def _ingest(upload: Upload, progress: Progress, livemode: bool, remaining_ms, started: float) -> dict | None:
    try:
        fmt, gz = file_format(upload.key)
        stream = S3Object(upload.bucket, upload.key, boto3_client=aws.s3(), is_gzip=gz)
        remaining = ((n, fields) for n, fields in rows(stream, fmt) if n > progress.row)  # resume
        segment = Segment(progress.row + 1)
        for batch in _batches(remaining, BATCH_ROWS):
            accepted, sources = _check_rows(upload, livemode, batch, segment)
            _write(accepted, sources, segment)
            last_row = batch[-1][0]
            if last_row - segment.first_row + 1 >= CHECKPOINT_ROWS:
                _close_segment(upload, progress, segment, last_row, livemode, started)
                segment = Segment(last_row + 1)
                if remaining_ms() < LOW_TIME_MS:
                    return {"continuation": {"bucket": upload.bucket, "key": upload.key, "etag": upload.etag}}
        if segment.records:
            _close_segment(
                upload, progress, segment, segment.first_row + segment.records - 1, livemode, started
            )
    except FileProblem as exc:
        return _finish(upload, progress, str(exc), livemode)
    return _finish(upload, progress, None, livemode)


def handle(event: dict, remaining_ms: Callable[[], int], function_arn: str | None = None) -> dict:
    """The bulk function: S3 notifications or a continuation of a file too large for one run."""
    continuations = []
    if "continuation" in event:
        c = event["continuation"]
        upload = parse_upload(c["bucket"], c["key"], c["etag"])
        uploads = [(upload, True)] if upload else []
    else:
        uploads = []
        for record in event.get("Records", []):
            s3 = record["s3"]
            object_key = unquote_plus(s3["object"]["key"])
            upload = parse_upload(s3["bucket"]["name"], object_key, s3["object"].get("eTag", ""))
            if upload:
                uploads.append((upload, False))
    for upload, resuming in uploads:
        follow_up = process(upload, remaining_ms, resuming)
        if follow_up:
            continuations.append(follow_up)
    if continuations and os.environ.get("METERING_LOCAL") != "1":
        for follow_up in continuations:  # in AWS: carry on in a fresh invocation
            aws.lambda_().invoke(
                FunctionName=function_arn, InvocationType="Event", Payload=json.dumps(follow_up)
            )
        return {}
    return {"continuations": continuations}


def _close_segment(
    upload: Upload, progress: Progress, segment: Segment, last_row: int, livemode: bool, started: float
) -> None:
    if segment.errors:
        _save_part(upload, segment)
        if segment.first_row not in progress.parts:
            progress.parts.append(segment.first_row)
        error_reports.publish(upload.account_id, livemode, segment.failures, started, clock.now())
    progress.row = last_row
    progress.records += segment.records
    progress.ingested += segment.ingested
    progress.errors += len(segment.errors)
    _checkpoint(upload, progress)


def _finish(upload: Upload, progress: Progress, failed_reason: str | None, livemode: bool) -> None:
    """Write the result (and errors) file, mark the file done, announce it."""
    errors_file = upload.result_key(".errors.csv") if progress.errors else None
    if errors_file:
        _merge_parts(upload, progress, errors_file)
    if failed_reason:
        status = "failed"
    else:
        status = "succeeded_with_errors" if progress.errors else "succeeded"
    result = {
        "file": upload.key,
        "status": status,
        "records": progress.records,
        "ingested": progress.ingested,
        "errors": progress.errors,
        "failed_reason": failed_reason,
        "errors_file": errors_file,
    }
    aws.s3().put_object(
        Bucket=upload.bucket, Key=upload.result_key(".result.json"), Body=json.dumps(result).encode()
    )
    _checkpoint(upload, progress, "failed" if failed_reason else "done")
    for first_row in progress.parts:
        aws.s3().delete_object(Bucket=upload.bucket, Key=upload.part_key(first_row))
    type_ = "data_management.import_set.failed" if failed_reason else "data_management.import_set.succeeded"
    notifications.publish(upload.account_id, livemode, type_, None, result)
    logger.info("bulk upload finished", extra=result)
    return None


def _merge_parts(upload: Upload, progress: Progress, errors_file: str) -> None:
    """Concatenate the segments' error parts (in row order) into one errors file, via /tmp."""
    with tempfile.NamedTemporaryFile("w+b", suffix=".csv", delete=False) as out:
        out.write(b"row,identifier,code,message\r\n")
        for first_row in sorted(progress.parts):
            body = aws.s3().get_object(Bucket=upload.bucket, Key=upload.part_key(first_row))["Body"]
            for chunk in iter(lambda b=body: b.read(1 << 20), b""):
                out.write(chunk)
        name = out.name
    try:
        aws.s3().upload_file(name, upload.bucket, errors_file)
    finally:
        os.unlink(name)
