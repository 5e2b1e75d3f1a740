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
import functools
import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.streaming import S3Object
from botocore.exceptions import ClientError

from metering import aws, clock, error_reports, event_store, meter_lookup, notifications, store, wire
from metering.bulk_rows import FileProblem, file_format, rows, slice_plan
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
SLICE_BYTES = 4 << 20  # a plain .csv / .jsonl file larger than this is split into slices of about this size
MAX_SLICES = 256  # a larger file gets larger slices (1 GB: 256 slices of 4 MiB)
CONCURRENT_SLICES = 16  # slices of one file running at once: slice k + 16 starts when slice k ends
NOT_STARTED = -1  # the lease of a slice no invocation has claimed yet


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
    slices: int | None = None  # file: number of slices once planned (0: not split)
    span: tuple[int, int, int, int] | None = None  # slice: (start, end, rows before it, header end)
    part: int | None = None  # slice of a re-chunked file: the number of its rows part

    @classmethod
    def from_item(cls, item: dict) -> "Progress":
        span = item.get("span")
        return cls(
            int(item["row"]),
            int(item["records"]),
            int(item["ingested"]),
            int(item["errors"]),
            [int(p) for p in item.get("parts", [])],
            item["status"],
            int(item.get("lease", 0)),
            int(item["slices"]) if item.get("slices") is not None else None,
            tuple(int(x) for x in span) if span else None,
            int(item["part"]) if item.get("part") is not None else None,
        )


@dataclass(frozen=True)
class Upload:
    bucket: str
    key: str
    etag: str
    account_id: str
    path: str  # the key after uploads/
    livemode: bool | None = None  # from a `test/` or `live/` folder; None: the account's first key's mode
    slice: int | None = None  # one slice of a file split for concurrent invocations

    @property
    def path_hash(self) -> str:
        """Bounded stand-in for the path (up to 1,016 bytes) in storage keys."""
        return hashlib.sha256(self.path.encode("utf-8")).hexdigest()

    @property
    def progress_key(self) -> dict:
        """The file's progress item, or its slice's."""
        file_key = {"pk": key("ACCT", self.account_id), "sk": key("IMPORT", self.etag, self.path_hash)}
        if self.slice is None:
            return file_key
        return {"pk": file_key["pk"], "sk": key(file_key["sk"], "S", f"{self.slice:05d}")}

    @property
    def file(self) -> "Upload":
        return replace(self, slice=None)

    def sliced(self, number: int) -> "Upload":
        return replace(self, slice=number)

    def result_key(self, suffix: str) -> str:
        return f"{RESULTS}{self.path}{suffix}"

    @property
    def reference(self) -> dict:
        out = {"bucket": self.bucket, "key": self.key, "etag": self.etag}
        return out if self.slice is None else {**out, "slice": self.slice}

    def part_key(self, first_row: int) -> str:
        return f"{RESULTS}.parts/{self.etag}/{self.path_hash}/{first_row:012d}.csv"

    def rows_part_key(self, number: int) -> str:
        """Rows of a re-chunked file (gzip, JSON array, quoted CSV) for slice `number`."""
        return f"{RESULTS}.parts/{self.etag}/{self.path_hash}/rows-{number:05d}.jsonl"

    def marker_key(self, name: str) -> dict:
        """A main table key next to the file's progress item, for `notifications.publish_once`."""
        file_key = self.file.progress_key
        return {"pk": file_key["pk"], "sk": key(file_key["sk"], name)}

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
    if current is None and upload.slice is not None:
        return None  # slices are created by the file's plan
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


@functools.cache
def _batch_writer() -> ThreadPoolExecutor:
    """The threads batches' writes wait on while the next batch is read and checked (one batch
    in flight per invocation; several invocations may share a process locally)."""
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="bulk-batch")


@dataclass
class _InFlight:
    """A checked batch whose writes are under way; its checks and writes kept apart until they end."""

    checked: Segment
    written: Segment
    future: Future

    def land(self, segment: Segment) -> None:
        """Wait for the writes; add the batch to the segment as `_check_rows` then `_write` would."""
        self.future.result()
        segment.records += self.checked.records
        segment.last_row = self.checked.last_row
        segment.ingested += self.written.ingested
        segment.errors += self.checked.errors + self.written.errors
        segment.failures += self.checked.failures + self.written.failures

    def wait(self) -> None:
        """Let the writes end (an error is already propagating)."""
        try:
            self.future.result()
        except Exception:  # noqa: S110  (the error being raised says what went wrong)
            pass


def _start_write(checked: Segment, accepted: list, sources: list) -> _InFlight:
    written = Segment(checked.first_row)
    return _InFlight(checked, written, _batch_writer().submit(_write, accepted, sources, written))


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


def process(upload: Upload, remaining_ms: Callable[[], int], handed_over: int | None = None) -> list[dict]:
    """Ingest (the rest of) a file or one of its slices. Returns the invocations to run next:
    a continuation when time ran low, the slices of a file just split."""
    started = clock.now()
    account = _account(upload.account_id)
    if upload.slice is not None:
        current = store.get(settings().main_table, **_pk_sk(upload.progress_key), consistent=True)
        if current is not None and current["status"] != "running":
            return _slice_done(upload)  # finished before a crash kept it from telling the file
    progress = _claim(upload, handed_over)
    if progress is None:
        return []
    if account is None:
        _finish(upload, progress, f"Unknown account {upload.account_id} in the upload path.", False)
        return []
    livemode = upload.livemode if upload.livemode is not None else bool(account.get("livemode", False))
    try:
        if upload.slice is None and progress.slices is None and progress.row == 0:
            progress.slices = _split(upload, progress)
        if upload.slice is None and progress.slices:
            return _coordinate(upload, progress, livemode)
        return _ingest(upload, progress, livemode, remaining_ms, started)
    except Exception:
        _release(upload, progress)  # let the retried notification resume from the checkpoint
        raise


def _pk_sk(k: dict) -> dict:
    return {"pk": k["pk"], "sk": k["sk"]}


def _release(upload: Upload, progress: Progress) -> None:
    try:
        _update(upload, "SET lease = :zero", "lease = :mine", {":zero": 0, ":mine": progress.lease})
    except ClientError:
        logger.exception("could not release the upload lease", extra={"file": upload.key})


def _open_rows(upload: Upload, progress: Progress) -> Iterator:
    """(row number, fields) of the file or slice after the checkpoint row, read from S3 pinned
    to the notified ETag. A slice reads its byte range, after the CSV header (read apart)."""
    fmt, gz = file_format(upload.key)
    if progress.part is not None:
        body = aws.s3().get_object(Bucket=upload.bucket, Key=upload.rows_part_key(progress.part))["Body"]
        return _part_rows(body, progress.row)
    if progress.span is None:
        stream = S3Object(
            upload.bucket, upload.key, boto3_client=aws.s3(), is_gzip=gz, IfMatch=f'"{upload.etag}"'
        )
        return ((n, fields) for n, fields in rows(stream, fmt) if n > progress.row)
    start, end, before, header_end = progress.span
    parts = [(0, header_end)] if start > 0 and header_end else []
    stream = io.BufferedReader(_Ranges(upload, [*parts, (start, end)]), CHUNK_BYTES)
    return ((n + before, fields) for n, fields in rows(stream, fmt) if n + before > progress.row)


CHUNK_BYTES = 1 << 20


def _part_rows(body, after: int) -> Iterator:
    """(row number, fields) of a rows part after row `after`; a problem line ends the file."""
    for line in body.iter_lines(chunk_size=CHUNK_BYTES):
        if not line:
            continue
        value = json.loads(line)
        if isinstance(value, dict):
            raise FileProblem(value["problem"])
        number, fields = value
        if number > after:
            yield number, fields


class _Ranges(io.RawIOBase):
    """Byte ranges of the object, one after the other, streamed with ranged GETs."""

    def __init__(self, upload: Upload, ranges: list[tuple[int, int]]):
        self.upload, self.ranges, self.body = upload, [r for r in ranges if r[1] > r[0]], None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self.body is None:
                if not self.ranges:
                    return 0
                start, end = self.ranges.pop(0)
                self.body = aws.s3().get_object(
                    Bucket=self.upload.bucket,
                    Key=self.upload.key,
                    IfMatch=f'"{self.upload.etag}"',
                    Range=f"bytes={start}-{end - 1}",
                )["Body"]
            data = self.body.read(len(buffer))
            if data:
                buffer[: len(data)] = data
                return len(data)
            self.body = None


def _ingest(upload: Upload, progress: Progress, livemode: bool, remaining_ms, started: float) -> list[dict]:
    """Rows in batches: a batch is read and checked while the one before it is written (one
    batch in flight; its outcome is added to the segment before the next one is written)."""
    segment = Segment(progress.row + 1)
    in_flight: _InFlight | None = None

    def landed() -> dict | None:
        """Add the batch in flight to the segment; a continuation when time ran low after a checkpoint."""
        nonlocal in_flight, segment
        batch, in_flight = in_flight, None
        batch.land(segment)
        if segment.last_row - segment.first_row + 1 >= CHECKPOINT_ROWS:
            _close_segment(upload, progress, segment, livemode, started)
            segment = Segment(segment.last_row + 1)
            if remaining_ms() < LOW_TIME_MS:
                return {"continuation": {**upload.reference, "lease": progress.lease}}
        return None

    try:
        remaining = _open_rows(upload, progress)
        for batch in _batches(remaining, BATCH_ROWS):
            checked = Segment(batch[0][0])
            with meter_lookup.batch():
                accepted, sources = _check_rows(upload, livemode, batch, checked)
            if in_flight is not None and (continuation := landed()) is not None:
                return [continuation]  # the batch just checked is read again by the continuation
            in_flight = _start_write(checked, accepted, sources)
        if in_flight is not None and (continuation := landed()) is not None:
            return [continuation]
    except FileProblem as exc:
        if in_flight is not None:
            in_flight.land(segment)
        _close_segment(upload, progress, segment, livemode, started)  # rows read before the problem
        return _end(upload, progress, str(exc), livemode)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status not in (404, 412):
            if in_flight is not None:
                in_flight.wait()
            raise
        if in_flight is not None:
            in_flight.land(segment)
        _close_segment(upload, progress, segment, livemode, started)
        if status == 404:
            return _end(upload, progress, "The object was deleted before it was read.", livemode)
        # The newer object has its own notification and writes the results under this path.
        reason = "The object was replaced by a newer upload under the same key before it was read."
        return _end(upload, progress, reason, livemode, write_result=False)
    except BaseException:
        if in_flight is not None:
            in_flight.wait()  # no write of this invocation goes on after it gave the file up
        raise
    _close_segment(upload, progress, segment, livemode, started)
    return _end(upload, progress, None, livemode)


def _end(upload: Upload, progress: Progress, reason: str | None, livemode: bool, write_result=True) -> list:
    if upload.slice is None:
        _finish(upload, progress, reason, livemode, write_result)
        return []
    _end_slice(upload, progress, reason, write_result)
    return _slice_done(upload)


# Files split into slices: a plain .csv or .jsonl file larger than SLICE_BYTES is cut at line
# boundaries into byte ranges, each with the number of rows before it, so every row keeps
# the number (source tag, derived identifier, errors file row) it has in the whole file.
# A file that can't be cut by bytes (gzip, a JSON array, a CSV with quoted cells) is
# re-chunked: a first pass writes its parsed, numbered rows as JSON Lines parts, one per
# slice (`_rechunk`). Each slice is ingested by its own invocation with its own progress
# item (checkpoints, lease, resume, sweep); the last one to finish writes the file's result.


def _split(upload: Upload, progress: Progress) -> int:
    """Plan the file's slices once (0: the file is read whole); returns their number."""
    try:
        fmt, gz = file_format(upload.key)
    except FileProblem:
        fmt, gz = None, False  # reading it says so
    plan, parts = [], []
    if fmt is not None:
        try:
            head = aws.s3().head_object(Bucket=upload.bucket, Key=upload.key, IfMatch=f'"{upload.etag}"')
        except ClientError:
            head = {}  # deleted or replaced: reading it says so
        size = int(head.get("ContentLength", 0))
        if not gz and fmt != ".json" and size > SLICE_BYTES:
            target = max(SLICE_BYTES, -(-size // MAX_SLICES))
            body = aws.s3().get_object(Bucket=upload.bucket, Key=upload.key, IfMatch=f'"{upload.etag}"')[
                "Body"
            ]
            plan = slice_plan(body, fmt, target)
        if len(plan) <= 1 and size > (SLICE_BYTES // GZIP_RATIO if gz else SLICE_BYTES):
            plan, parts = [], _rechunk(upload, progress, fmt, gz)
    table = settings().main_table
    for number, span in enumerate(plan if len(plan) > 1 else []):
        item = {
            **upload.sliced(number).progress_key,
            "row": span[2],
            "records": 0,
            "ingested": 0,
            "errors": 0,
        }
        item |= {
            "parts": [],
            "status": "running",
            "lease": NOT_STARTED,
            "span": list(span),
            "file": upload.key,
        }
        store.put_new(table, item)  # planned again after a crash: the same slices, kept as they are
    for number, before in enumerate(parts):
        item = {**upload.sliced(number).progress_key, "row": before, "records": 0, "ingested": 0, "errors": 0}
        item |= {"parts": [], "status": "running", "lease": NOT_STARTED, "part": number, "file": upload.key}
        store.put_new(table, item)
    slices = len(plan) if len(plan) > 1 else len(parts)
    _update(upload, "SET slices = :n", "lease = :mine", {":n": slices, ":mine": progress.lease})
    return slices


GZIP_RATIO = 4  # a gzip file over SLICE_BYTES / 4 compressed is re-chunked (CSV and JSON compress 5-10x)


def _rechunk(upload: Upload, progress: Progress, fmt: str, gz: bool) -> list[int]:
    """The first pass over a file that can't be cut by bytes (gzip, a JSON array, a CSV with
    quoted cells): its rows, read once as a stream, written as JSON Lines parts of about
    SLICE_BYTES (`[row number, fields]` per line, the whole-file numbers), each a slice's
    input. Returns the rows before each part; [] when it holds one part at most (read whole).

    The cut depends on the file only, so a pass run again (a crash, a duplicate delivery that
    took over) writes the same parts. A problem that fails the file (bytes not UTF-8, a broken
    gzip stream, invalid JSON) ends the last part with a `{"problem": reason}` line: its slice
    fails the file with that reason after the rows before it, as the whole file's read would.
    Memory holds one part."""
    stream = S3Object(
        upload.bucket, upload.key, boto3_client=aws.s3(), is_gzip=gz, IfMatch=f'"{upload.etag}"'
    )
    befores: list[int] = []
    lines: list[str] = []
    size, before, last, problem = 0, 0, 0, None

    def flush() -> None:
        nonlocal lines, size, before
        body = ("\n".join(lines) + "\n").encode("ascii") if lines else b""
        aws.s3().put_object(Bucket=upload.bucket, Key=upload.rows_part_key(len(befores)), Body=body)
        befores.append(before)
        lines, size, before = [], 0, last
        renewed = int(time.time()) + LEASE_SECONDS  # the pass may outlast one lease
        _update(upload, "SET lease = :new", "lease = :old", {":new": renewed, ":old": progress.lease})
        progress.lease = renewed

    try:
        for number, fields in rows(stream, fmt):
            if size >= SLICE_BYTES:
                flush()
            line = json.dumps([number, fields], separators=(",", ":"))
            lines.append(line)
            size, last = size + len(line) + 1, number
    except FileProblem as exc:
        problem = str(exc)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (404, 412):
            for number in range(len(befores)):
                aws.s3().delete_object(Bucket=upload.bucket, Key=upload.rows_part_key(number))
            return []  # read whole, which says so
        raise
    if not befores:
        return []  # one part: the file is read whole (nothing written)
    if problem is not None:
        lines.append(json.dumps({"problem": problem}))
    flush()
    return befores


def _slice_items(upload: Upload) -> list[dict]:
    prefix = key(upload.progress_key["sk"], "S", "")
    items = store.query(
        settings().main_table, upload.progress_key["pk"], prefix, prefix + store.HIGH, True, True
    )
    return [i for i in items if i["sk"].startswith(prefix)]


def _coordinate(upload: Upload, progress: Progress, livemode: bool) -> list[dict]:
    """The file of a split: finish it once every slice is done, else (re)start the slices
    that are not running (just planned, or their invocation died) and step aside."""
    slices = _slice_items(upload)
    now = int(time.time())
    if len(slices) == progress.slices and all(i["status"] != "running" for i in slices):
        _finish_slices(upload, progress, slices, livemode)
        return []
    _release(upload, progress)
    return [{"continuation": upload.sliced(n).reference} for n in _due(slices, now)]


def _number(item: dict) -> int:
    return int(item["sk"].rsplit("#", 1)[1])


def _due(slices: list[dict], now: int) -> list[int]:
    """Slices to (re)start: the first CONCURRENT_SLICES that are not running; a later one only
    once the slice CONCURRENT_SLICES before it ended (its end starts it; this catches a lost start)."""
    by_number = {_number(i): i for i in slices}
    due = []
    for n, item in sorted(by_number.items()):
        lease = int(item.get("lease", 0))
        if item["status"] != "running" or 0 <= now < lease:
            continue
        before = by_number.get(n - CONCURRENT_SLICES)
        if lease == NOT_STARTED and before is not None and before["status"] == "running":
            continue  # waits for its turn
        due.append(n)
    return due


def _end_slice(upload: Upload, progress: Progress, reason: str | None, write_result: bool) -> None:
    """Mark the slice done (or failed, with the reason for the file's result)."""
    values = {":status": "failed" if reason else "done", ":reason": reason, ":write": write_result}
    values |= {":lease": progress.lease, ":running": "running"}
    aws.dynamodb().update_item(
        TableName=settings().main_table,
        Key=store.to_item(upload.progress_key),
        UpdateExpression="SET #s = :status, reason = :reason, write_result = :write",
        ConditionExpression="lease = :lease AND #s = :running",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues=store.values(values),
    )


def _slice_done(upload: Upload) -> list[dict]:
    """Tell the file a slice is done (a set: telling it twice changes nothing); the invocation
    that completes the set finishes the file."""
    out = aws.dynamodb().update_item(
        TableName=settings().main_table,
        Key=store.to_item(upload.file.progress_key),
        UpdateExpression="ADD done_slices :k",
        ExpressionAttributeValues={":k": {"NS": [str(upload.slice)]}},
        ReturnValues="ALL_NEW",
    )
    item = store.from_item(out["Attributes"])
    if item.get("status") != "running":
        return []
    if len(item.get("done_slices", ())) < int(item.get("slices") or 0):
        following = upload.sliced(upload.slice + CONCURRENT_SLICES)
        if upload.slice + CONCURRENT_SLICES < int(item.get("slices") or 0):
            return [{"continuation": following.reference}]  # its turn (a duplicate start does nothing)
        return []
    file = upload.file
    progress = _claim(file, None)
    if progress is None:
        return []  # another invocation is finishing it (or the sweep will)
    account = _account(file.account_id) or {}
    livemode = file.livemode if file.livemode is not None else bool(account.get("livemode", False))
    try:
        return _coordinate(file, progress, livemode)
    except Exception:
        _release(file, progress)
        raise


def _finish_slices(upload: Upload, progress: Progress, slices: list[dict], livemode: bool) -> None:
    """One result for the file: the slices' counters and error parts added up."""
    progress.records = sum(int(i["records"]) for i in slices)
    progress.ingested = sum(int(i["ingested"]) for i in slices)
    progress.errors = sum(int(i["errors"]) for i in slices)
    progress.parts = sorted({int(p) for i in slices for p in i.get("parts", [])})
    progress.row = max(int(i["row"]) for i in slices)
    reasons = [i["reason"] for i in sorted(slices, key=lambda i: i["sk"]) if i.get("reason")]
    write_result = all(i.get("write_result", True) for i in slices)
    for number in sorted(int(i["part"]) for i in slices if i.get("part") is not None):
        aws.s3().delete_object(Bucket=upload.bucket, Key=upload.rows_part_key(number))  # all read
    _finish(upload, progress, reasons[0] if reasons else None, livemode, write_result)


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
        if progress.slices:  # split: its slices are swept one by one
            follow_ups += _sweep_slices(upload, now)
            continue
        follow_ups += _sweep_one(upload, current, progress)
    return follow_ups


def _sweep_slices(upload: Upload, now: int) -> list[dict]:
    slices = _slice_items(upload)
    if all(i["status"] != "running" for i in slices):
        return [{"continuation": upload.reference}]  # the invocation finishing the file died
    out = []
    by_number = {_number(i): i for i in slices}
    for n in _due(slices, now):
        item = by_number[n]
        if int(item.get("lease", 0)) == NOT_STARTED:
            out.append({"continuation": upload.sliced(n).reference})  # its start was lost
        else:
            out += _sweep_one(upload.sliced(n), item, Progress.from_item(item))
    return out


def _sweep_one(upload: Upload, current: dict, progress: Progress) -> list[dict]:
    """A continuation for a file (or slice) whose invocation died, or give it up after
    MAX_SWEEPS resumptions that did not get past the same row."""
    same_row = int(current.get("swept_row", -1)) == progress.row
    sweeps = int(current.get("sweeps", 0)) + 1 if same_row else 1
    try:
        aws.dynamodb().update_item(
            TableName=settings().main_table,
            Key=store.to_item(upload.progress_key),
            UpdateExpression="SET sweeps = :n, swept_row = :row",
            ConditionExpression="lease = :lease AND #r = :row AND #s = :running",
            ExpressionAttributeNames={"#r": "row", "#s": "status"},
            ExpressionAttributeValues=store.values(
                {":n": sweeps, ":row": progress.row, ":lease": progress.lease, ":running": "running"}
            ),
        )
    except ClientError as exc:
        if store.error_code(exc) == "ConditionalCheckFailedException":
            return []  # it moved on meanwhile
        raise
    if sweeps > MAX_SWEEPS:
        return _give_up(upload, sweeps - 1)
    logger.warning(
        "resuming a bulk file whose invocation died", extra={"file": upload.key, "slice": upload.slice}
    )
    return [{"continuation": upload.reference}]


def _give_up(upload: Upload, attempts: int) -> list[dict]:
    """Fail a file (or slice) the sweeper could not get past one row: result file, event, done."""
    account = _account(upload.account_id)
    progress = _claim(upload, None)
    if progress is None:
        return []
    livemode = upload.livemode
    if livemode is None:
        livemode = bool(account.get("livemode", False)) if account else False
    reason = (
        f"The file could not be processed past row {progress.row} after {attempts} resumptions; "
        "rows up to there are counted."
    )
    return _end(upload, progress, reason, livemode)


def handle(event: dict, remaining_ms: Callable[[], int], function_arn: str | None = None) -> dict:
    """The bulk function: S3 notifications, a continuation of a file too large for one run,
    or the scheduled sweep that resumes files whose invocation died."""
    continuations = []
    if event.get("detail-type") == "Scheduled Event":
        continuations, uploads = sweep(), []
    elif "continuation" in event:
        c = event["continuation"]
        upload = parse_upload(c["bucket"], c["key"], c["etag"])
        if upload and c.get("slice") is not None:
            upload = upload.sliced(int(c["slice"]))
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
        continuations += process(upload, remaining_ms, handed_over)
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
