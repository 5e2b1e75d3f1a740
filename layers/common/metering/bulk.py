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

The invocation working on a file holds a lease in the progress item, renewed at every
checkpoint: a duplicate notification arriving meanwhile does nothing, one arriving
after the holder died (S3 retries a failed invocation after 1 and 3 minutes) takes
over once the lease has run out. Reads are pinned to the notified ETag (`If-Match`), so
an object replaced under the same key is never read as the old version's rows.
"""

import csv
import hashlib
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

from metering import aws, clock, error_reports, event_store, meter_lookup, notifications, store, wire
from metering.bulk_rows import FileProblem, file_format, rows
from metering.config import settings
from metering.errors import StripeError
from metering.keys import key
from metering.meter_events import Rejected, check, parse_unix
from metering.observability import logger

UPLOADS, RESULTS = "uploads/", "results/"
BATCH_ROWS = 500
WRITERS = 64  # concurrent conditional writes per batch (the client pool holds 64 connections)
CHECKPOINT_ROWS = 5000
LOW_TIME_MS = 120_000
LEASE_SECONDS = 150  # < S3's second retry (3 min after a failure), > one segment's work
RUNNING_PK = "BULK#RUNNING"  # index of the files being ingested, read by the sweeper
MAX_SWEEPS = 3  # resumptions by the sweeper without getting past a row before the file fails


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
    livemode: bool | None = None  # from a `test/` or `live/` folder; None: the account's first key's mode

    @property
    def path_hash(self) -> str:
        """Bounded stand-in for the path (up to 1,016 bytes) in storage keys."""
        return hashlib.sha256(self.path.encode("utf-8")).hexdigest()

    @property
    def progress_key(self) -> dict:
        return {"pk": key("ACCT", self.account_id), "sk": key("IMPORT", self.etag, self.path_hash)}

    def result_key(self, suffix: str) -> str:
        return f"{RESULTS}{self.path}{suffix}"

    @property
    def reference(self) -> dict:
        return {"bucket": self.bucket, "key": self.key, "etag": self.etag}

    def part_key(self, first_row: int) -> str:
        return f"{RESULTS}.parts/{self.etag}/{self.path_hash}/{first_row:012d}.csv"

    def marker_key(self, name: str) -> dict:
        """A main table key next to the progress item, for `notifications.publish_once`."""
        return {"pk": self.progress_key["pk"], "sk": key(self.progress_key["sk"], name)}

    @property
    def running_key(self) -> dict:
        """The file's entry in the index of running files the sweeper reads."""
        return {"pk": RUNNING_PK, "sk": key(self.account_id, self.etag, self.path_hash)}


def parse_upload(bucket: str, object_key: str, etag: str) -> Upload | None:
    """The upload an object key names, or None for keys outside uploads/ and folder markers."""
    if not object_key.startswith(UPLOADS) or object_key.endswith("/"):
        return None
    account_id, _, rest = object_key[len(UPLOADS) :].partition("/")
    if not account_id or not rest:
        return None
    folder = rest.partition("/")[0] if "/" in rest else None
    livemode = {"test": False, "live": True}.get(folder)
    return Upload(bucket, object_key, etag.strip('"'), account_id, f"{account_id}/{rest}", livemode)


def _account(account_id: str) -> dict | None:
    return store.get(settings().main_table, key("ACCT", account_id), "ACCOUNT")


def _claim(upload: Upload, handed_over: int | None) -> Progress | None:
    """Take the lease on the file's progress; None when there is nothing to do.

    `handed_over` is the lease a continuation carries: the invocation that handed the file
    over held it, so the continuation may take it before it runs out."""
    table, now = settings().main_table, int(time.time())
    k = upload.progress_key
    current = store.get(table, k["pk"], k["sk"], consistent=True)
    if current is None:
        _index(upload, now)  # first: a file never runs without its entry in the sweeper's index
        item = {**k, "row": 0, "records": 0, "ingested": 0, "errors": 0, "parts": [], "status": "running"}
        item |= {"file": upload.key, "lease": now + LEASE_SECONDS}
        return Progress(lease=now + LEASE_SECONDS) if store.put_new(table, item) else None
    progress = Progress.from_item(current)
    if progress.status != "running" or (progress.lease > now and progress.lease != handed_over):
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


def _index(upload: Upload, now: int) -> None:
    entry = {**upload.running_key, "bucket": upload.bucket, "key": upload.key, "etag": upload.etag}
    aws.dynamodb().put_item(TableName=settings().main_table, Item=store.to_item({**entry, "since": now}))


def _unindex(upload: Upload) -> None:
    try:
        aws.dynamodb().delete_item(TableName=settings().main_table, Key=store.to_item(upload.running_key))
    except ClientError:  # the sweeper removes entries of finished files too
        logger.exception("could not remove the running-file entry", extra={"file": upload.key})


def _update(upload: Upload, expression: str, condition: str, values: dict) -> None:
    aws.dynamodb().update_item(
        TableName=settings().main_table,
        Key=store.to_item(upload.progress_key),
        UpdateExpression=expression,
        ConditionExpression=condition,
        ExpressionAttributeValues=store.values(values),
    )


def _checkpoint(upload: Upload, progress: Progress, status: str = "running") -> None:
    """Move the checkpoint forward and renew the lease, only while this invocation holds it."""
    renewed = int(time.time()) + LEASE_SECONDS
    values = {
        ":row": progress.row,
        ":records": progress.records,
        ":ingested": progress.ingested,
        ":errors": progress.errors,
        ":parts": progress.parts,
        ":status": status,
        ":lease": progress.lease,
        ":renewed": renewed,
        ":running": "running",
    }
    aws.dynamodb().update_item(
        TableName=settings().main_table,
        Key=store.to_item(upload.progress_key),
        UpdateExpression="SET #r = :row, records = :records, ingested = :ingested, errors = :errors, "
        "parts = :parts, #s = :status, lease = :renewed",
        ConditionExpression="lease = :lease AND #s = :running",
        ExpressionAttributeNames={"#r": "row", "#s": "status"},
        ExpressionAttributeValues=store.values(values),
    )
    progress.lease = renewed


@dataclass
class Segment:
    """Rows between two checkpoints: what they did, and the rejected ones."""

    first_row: int
    last_row: int = 0
    records: int = 0
    ingested: int = 0
    errors: list[tuple[int, str, str, str]] = field(default_factory=list)
    failures: list[error_reports.Failure] = field(default_factory=list)

    def reject(self, number: int, fields, code: str, message: str) -> None:
        identifier = fields.get("identifier") if isinstance(fields, dict) else None
        identifier = identifier if isinstance(identifier, str) and wire.is_unicode(identifier) else ""
        self.errors.append((number, identifier, code, message))
        name = fields.get("event_name") if isinstance(fields, dict) else None
        name = name if isinstance(name, str) else ""
        self.failures.append(error_reports.Failure(name, identifier or None, code, message))


def _check_rows(upload: Upload, livemode: bool, batch: list, segment: Segment) -> tuple[list, list]:
    accepted, sources = [], []
    for number, fields in batch:
        segment.records += 1
        segment.last_row = number
        if not isinstance(fields, dict):
            reason = fields if isinstance(fields, str) else "Each row must be a JSON object."
            segment.reject(number, {}, "invalid_row", reason)
            continue
        fields = {
            k: v for k, v in fields.items() if k in ("event_name", "timestamp", "identifier", "payload")
        }
        if fields.get("identifier") in (None, ""):  # derived, so a row written again is the same event
            fields["identifier"] = f"{upload.etag}-{number}"
        try:
            accepted.append(check(upload.account_id, livemode, fields, parse_unix(fields.get("timestamp"))))
            sources.append(f"{upload.key}#{upload.etag}#{number}")
        except StripeError as exc:
            segment.reject(number, fields, exc.code or "invalid_request", exc.message)
    return accepted, sources


def _write(accepted: list, sources: list, segment: Segment) -> None:
    results = event_store.record_many(accepted, workers=WRITERS, sources=sources)
    fault = next((r for r in results if not isinstance(r, event_store.Stored | Rejected)), None)
    if fault is not None:
        raise fault  # resumed from the checkpoint: rows written again are recognised by source
    for event, source, result in zip(accepted, sources, results, strict=True):
        if isinstance(result, Rejected):
            fields = {"identifier": event.identifier, "event_name": event.event_name}
            segment.reject(int(source.rsplit("#", 1)[1]), fields, result.code, result.message)
        else:
            segment.ingested += 1


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    """A cell a spreadsheet shows as text: one starting like a formula gets a leading `'`."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def _save_part(upload: Upload, segment: Segment) -> None:
    body = io.StringIO()
    rows = sorted(segment.errors)
    csv.writer(body).writerows([(n, *(spreadsheet_safe(c) for c in cells)) for n, *cells in rows])
    aws.s3().put_object(
        Bucket=upload.bucket, Key=upload.part_key(segment.first_row), Body=body.getvalue().encode()
    )


def _batches(numbered: Iterator, size: int) -> Iterator[list]:
    """Rows in batches; when the file turns out unreadable, the rows read before it come first."""
    batch, problem = [], None
    try:
        for row in numbered:
            batch.append(row)
            if len(batch) == size:
                yield batch
                batch = []
    except FileProblem as exc:
        problem = exc
    if batch:
        yield batch
    if problem:
        raise problem


def process(upload: Upload, remaining_ms: Callable[[], int], handed_over: int | None = None) -> dict | None:
    """Ingest (the rest of) a file. Returns a continuation event when time ran low, else None."""
    started = clock.now()
    account = _account(upload.account_id)
    progress = _claim(upload, handed_over)
    if progress is None:
        return None
    if account is None:
        return _finish(upload, progress, f"Unknown account {upload.account_id} in the upload path.", False)
    livemode = upload.livemode if upload.livemode is not None else bool(account.get("livemode", False))
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
    segment = Segment(progress.row + 1)
    try:
        fmt, gz = file_format(upload.key)
        # If-Match: a newer object under the same key is its own upload, never read as this one.
        stream = S3Object(
            upload.bucket, upload.key, boto3_client=aws.s3(), is_gzip=gz, IfMatch=f'"{upload.etag}"'
        )
        remaining = ((n, fields) for n, fields in rows(stream, fmt) if n > progress.row)  # resume
        for batch in _batches(remaining, BATCH_ROWS):
            with meter_lookup.batch():
                accepted, sources = _check_rows(upload, livemode, batch, segment)
            _write(accepted, sources, segment)
            if segment.last_row - segment.first_row + 1 >= CHECKPOINT_ROWS:
                _close_segment(upload, progress, segment, livemode, started)
                segment = Segment(segment.last_row + 1)
                if remaining_ms() < LOW_TIME_MS:
                    return {"continuation": {**upload.reference, "lease": progress.lease}}
    except FileProblem as exc:
        _close_segment(upload, progress, segment, livemode, started)  # rows read before the problem
        return _finish(upload, progress, str(exc), livemode)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status not in (404, 412):
            raise
        _close_segment(upload, progress, segment, livemode, started)
        if status == 404:
            return _finish(upload, progress, "The object was deleted before it was read.", livemode)
        # The newer object has its own notification and writes the results under this path.
        reason = "The object was replaced by a newer upload under the same key before it was read."
        return _finish(upload, progress, reason, livemode, write_result=False)
    _close_segment(upload, progress, segment, livemode, started)
    return _finish(upload, progress, None, livemode)


def sweep() -> list[dict]:
    """Continuation events for the files whose invocation died (lease run out or released,
    S3's retries spent): each resumes from its last checkpoint. A file the sweeper already
    resumed MAX_SWEEPS times without getting past the same row fails with a reason instead.

    Reads the index of running files (one partition of small items), never the table."""
    table, now = settings().main_table, int(time.time())
    follow_ups = []
    for entry in list(store.query(table, RUNNING_PK, "\x01", store.HIGH, forward=True, consistent=True)):
        upload = parse_upload(entry.get("bucket", ""), entry.get("key", ""), entry.get("etag", ""))
        if upload is None or upload.running_key["sk"] != entry["sk"]:
            stale = store.to_item({"pk": entry["pk"], "sk": entry["sk"]})
            aws.dynamodb().delete_item(TableName=table, Key=stale)
            continue
        k = upload.progress_key
        current = store.get(table, k["pk"], k["sk"], consistent=True)
        if current is None:  # indexed, then died before its progress item was written
            if int(entry.get("since", 0)) + LEASE_SECONDS < now:
                follow_ups.append({"continuation": upload.reference})
            continue
        progress = Progress.from_item(current)
        if progress.status != "running":
            _unindex(upload)
            continue
        if progress.lease > now:
            continue  # alive, or just handed over
        same_row = int(current.get("swept_row", -1)) == progress.row
        sweeps = int(current.get("sweeps", 0)) + 1 if same_row else 1
        try:
            aws.dynamodb().update_item(
                TableName=table,
                Key=store.to_item(k),
                UpdateExpression="SET sweeps = :n, swept_row = :row",
                ConditionExpression="lease = :lease AND #r = :row AND #s = :running",
                ExpressionAttributeNames={"#r": "row", "#s": "status"},
                ExpressionAttributeValues=store.values(
                    {":n": sweeps, ":row": progress.row, ":lease": progress.lease, ":running": "running"}
                ),
            )
        except ClientError as exc:
            if store.error_code(exc) == "ConditionalCheckFailedException":
                continue  # it moved on meanwhile
            raise
        if sweeps > MAX_SWEEPS:
            _give_up(upload, sweeps - 1)
        else:
            logger.warning("resuming a bulk file whose invocation died", extra={"file": upload.key})
            follow_ups.append({"continuation": upload.reference})
    return follow_ups


def _give_up(upload: Upload, attempts: int) -> None:
    """Fail a file the sweeper could not get past one row: result file, event, done."""
    account = _account(upload.account_id)
    progress = _claim(upload, None)
    if progress is None:
        return
    livemode = upload.livemode
    if livemode is None:
        livemode = bool(account.get("livemode", False)) if account else False
    reason = (
        f"The file could not be processed past row {progress.row} after {attempts} resumptions; "
        "rows up to there are counted."
    )
    _finish(upload, progress, reason, livemode)


def handle(event: dict, remaining_ms: Callable[[], int], function_arn: str | None = None) -> dict:
    """The bulk function: S3 notifications, a continuation of a file too large for one run,
    or the scheduled sweep that resumes files whose invocation died."""
    continuations = []
    if event.get("detail-type") == "Scheduled Event":
        continuations, uploads = sweep(), []
    elif "continuation" in event:
        c = event["continuation"]
        upload = parse_upload(c["bucket"], c["key"], c["etag"])
        uploads = [(upload, c.get("lease"))] if upload else []
    else:
        uploads = []
        for record in event.get("Records", []):
            s3 = record["s3"]
            object_key = unquote_plus(s3["object"]["key"])
            upload = parse_upload(s3["bucket"]["name"], object_key, s3["object"].get("eTag", ""))
            if upload:
                uploads.append((upload, None))
    for upload, handed_over in uploads:
        follow_up = process(upload, remaining_ms, handed_over)
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
    upload: Upload, progress: Progress, segment: Segment, livemode: bool, started: float
) -> None:
    """Save the segment's rejected rows, report them, then move the checkpoint past it."""
    if not segment.records:
        return
    if segment.errors:
        _save_part(upload, segment)
        if segment.first_row not in progress.parts:
            progress.parts.append(segment.first_row)
        # Once per segment, however often the segment runs again after a crash before its checkpoint.
        marker = upload.marker_key(f"REPORT#{segment.first_row:012d}")
        error_reports.publish_once(
            upload.account_id, livemode, segment.failures, started, clock.now(), marker
        )
    progress.row = segment.last_row
    progress.records += segment.records
    progress.ingested += segment.ingested
    progress.errors += len(segment.errors)
    _checkpoint(upload, progress)


def _finish(
    upload: Upload, progress: Progress, failed_reason: str | None, livemode: bool, write_result: bool = True
) -> None:
    """Write the result (and errors) file, announce it, then mark the file done."""
    errors_file = upload.result_key(".errors.csv") if progress.errors and write_result else None
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
    if write_result:
        aws.s3().put_object(
            Bucket=upload.bucket, Key=upload.result_key(".result.json"), Body=json.dumps(result).encode()
        )
    # Announced before the file is marked done: a crash in between announces it again, never not at all.
    type_ = "data_management.import_set.failed" if failed_reason else "data_management.import_set.succeeded"
    notifications.publish(upload.account_id, livemode, type_, None, result)
    _checkpoint(upload, progress, "failed" if failed_reason else "done")
    _unindex(upload)
    for first_row in progress.parts:
        aws.s3().delete_object(Bucket=upload.bucket, Key=upload.part_key(first_row))
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
