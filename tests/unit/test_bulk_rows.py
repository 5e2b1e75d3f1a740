"""Bulk file readers: formats by extension, CSV / JSON array / JSON Lines rows, whole-file problems."""

import gzip
import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering import bulk_rows
from metering.bulk_rows import FileProblem, file_format, rows


def read(body: bytes, fmt: str) -> list:
    return list(rows(io.BytesIO(body), fmt))


@pytest.mark.parametrize(
    "key, expected",
    [
        ("uploads/a/x.csv", (".csv", False)),
        ("uploads/a/X.CSV", (".csv", False)),
        ("uploads/a/x.json", (".json", False)),
        ("uploads/a/x.jsonl", (".jsonl", False)),
        ("uploads/a/x.jsonl.gz", (".jsonl", True)),
        ("uploads/a/x.csv.GZ", (".csv", True)),
    ],
)
def test_format_from_extension(key, expected):
    assert file_format(key) == expected


@pytest.mark.parametrize("key", ["uploads/a/x.txt", "uploads/a/x.gz", "uploads/a/csv", "uploads/a/x.csv.zip"])
def test_other_extensions_fail_the_file(key):
    with pytest.raises(FileProblem, match="extension"):
        file_format(key)


def test_csv_rows_become_meter_event_fields():
    body = (
        "\ufeffidentifier, timestamp ,event_name,payload_stripe_customer_id,payload_value\r\n"
        'i1,100,api,cus_1,"1,5"\r\n'
        ",101,api,cus_2,\r\n"
        "\r\n"
        "i3,102,api\r\n"
        'i4,103,"a ""quoted""\nname",cus_4,2\r\n'
    ).encode()
    assert read(body, ".csv") == [
        (
            1,
            {
                "identifier": "i1",
                "timestamp": "100",
                "event_name": "api",
                "payload": {"stripe_customer_id": "cus_1", "value": "1,5"},
            },
        ),  # noqa: E501
        (2, {"timestamp": "101", "event_name": "api", "payload": {"stripe_customer_id": "cus_2"}}),
        (4, "Row has 3 cells; the header has 5."),
        (
            5,
            {
                "identifier": "i4",
                "timestamp": "103",
                "event_name": 'a "quoted"\nname',
                "payload": {"stripe_customer_id": "cus_4", "value": "2"},
            },
        ),  # noqa: E501
    ]


@pytest.mark.parametrize(
    "header, missing",
    [
        ("identifier,event_name,payload_value", "timestamp"),
        ("identifier,timestamp,payload_value", "event_name"),
        ("identifier,timestamp,event_name", "payload_<key>"),
        ("value", "event_name, timestamp, payload_<key>"),
    ],
)
def test_csv_missing_mandatory_columns_fail_the_file(header, missing):
    with pytest.raises(FileProblem, match=f"Missing mandatory column\\(s\\): {missing}"):
        read(f"{header}\n1,2,3\n".encode(), ".csv")


def test_identifier_column_is_optional():
    assert read(b"timestamp,event_name,payload_value\n1,a,2\n", ".csv") == [
        (1, {"timestamp": "1", "event_name": "a", "payload": {"value": "2"}})
    ]


@pytest.mark.parametrize("fmt", [".csv", ".json", ".jsonl"])
@pytest.mark.parametrize("body", [b"", b"  \n\n"])
def test_empty_files_fail(fmt, body):
    with pytest.raises(FileProblem, match="empty"):
        read(body, fmt)


def test_a_csv_field_over_the_size_limit_rejects_only_its_row():
    body = b"timestamp,event_name,payload_value\n1,a,2\n1,a," + b"9" * 200_000 + b"\n3,a,4\n"
    first, too_long, last = read(body, ".csv")
    assert first == (1, {"timestamp": "1", "event_name": "a", "payload": {"value": "2"}})
    assert too_long[0] == 2 and "field larger than field limit" in too_long[1]
    assert last == (3, {"timestamp": "3", "event_name": "a", "payload": {"value": "4"}})


def test_a_csv_line_over_the_row_limit_is_skipped_in_pieces():
    body = b"timestamp,event_name,payload_value\n" + b"1,a," * 300_000 + b"\n3,a,4\n"
    assert read(body, ".csv") == [
        (1, "The line is longer than 1048576 characters."),
        (2, {"timestamp": "3", "event_name": "a", "payload": {"value": "4"}}),
    ]


@pytest.mark.parametrize("fmt", [".jsonl", ".json"])
def test_deeply_nested_rows_are_rejected_not_recursed(fmt):
    deep = "[" * 100_000 + "]" * 100_000  # beyond the recursion limit of any decoder
    shallow = '{"payload": ' + "[" * 40 + "]" * 40 + "}"  # decodes, but deeper than 32 levels
    good = '{"event_name": "a", "payload": {"v": "1"}}'
    lines = [good, shallow, deep, good]
    body = ("\n".join(lines) if fmt == ".jsonl" else "[" + ", ".join(lines) + "]").encode()
    if fmt == ".jsonl":
        assert read(body, fmt) == [
            (1, {"event_name": "a", "payload": {"v": "1"}}),
            (2, "The row is nested more than 32 levels deep."),
            (3, "The row is nested more than 32 levels deep."),
            (4, {"event_name": "a", "payload": {"v": "1"}}),
        ]
    else:  # a JSON array element too deep to decode can't be skipped: the file fails, with a reason
        found = []
        with pytest.raises(FileProblem, match="Element 3 is nested too deeply"):
            found.extend(rows(io.BytesIO(body), fmt))
        assert found == [
            (1, {"event_name": "a", "payload": {"v": "1"}}),
            (2, "The row is nested more than 32 levels deep."),
        ]


def test_text_that_is_not_utf8_fails_the_file():
    with pytest.raises(FileProblem, match="UTF-8"):
        read(b"timestamp,event_name,payload_value\n1,\xff\xfe,2\n", ".csv")


def test_gzip_stream_read_incrementally():
    body = gzip.compress(b'{"event_name": "a", "payload": {"value": 1.50}}\n')
    assert list(rows(gzip.GzipFile(fileobj=io.BytesIO(body)), ".jsonl")) == [
        (1, {"event_name": "a", "payload": {"value": "1.50"}})
    ]


def test_a_corrupt_gzip_stream_fails_the_file():
    with pytest.raises(FileProblem, match="could not be read"):
        list(rows(gzip.GzipFile(fileobj=io.BytesIO(b"not gzip")), ".csv"))


def test_json_lines_numbers_stay_exact_and_bad_lines_are_row_errors():
    body = b'{"timestamp": 5, "payload": {"v": 0.1}}\n\nnot json\n[1]\n'
    assert read(body, ".jsonl") == [
        (1, {"timestamp": "5", "payload": {"v": "0.1"}}),
        (3, "Invalid JSON: Expecting value."),
        (4, ["1"]),
    ]


def test_an_overlong_json_line_is_a_row_error_and_reading_goes_on(monkeypatch):
    monkeypatch.setattr(bulk_rows, "MAX_ROW_CHARS", 50)
    body = b'{"a": "' + b"x" * 500 + b'"}\n{"b": 1}\n'
    assert read(body, ".jsonl") == [(1, "The line is longer than 50 characters."), (2, {"b": "1"})]


def test_json_array_elements_across_chunk_boundaries(monkeypatch):
    monkeypatch.setattr(bulk_rows, "CHUNK", 7)
    elements = [{"event_name": "e" * i, "payload": {"value": 12345678901234}} for i in range(20)]
    got = read(json.dumps(elements, indent=2).encode(), ".json")
    assert [n for n, _ in got] == list(range(1, 21))
    assert got[-1][1] == {"event_name": "e" * 19, "payload": {"value": "12345678901234"}}


@given(st.lists(st.integers(min_value=-(10**15), max_value=10**15), max_size=30), st.integers(1, 40))
def test_json_array_numbers_are_never_cut_by_a_chunk(numbers, chunk):
    bulk_rows.CHUNK, saved = chunk, bulk_rows.CHUNK
    try:
        got = read(json.dumps(numbers).encode(), ".json") if numbers else []
    finally:
        bulk_rows.CHUNK = saved
    assert got == [(i + 1, str(n)) for i, n in enumerate(numbers)]


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"event_name": "a"}', "one JSON array"),
        (b'[{"a": 1}', "not closed"),
        (b'[{"a": 1} {"b": 2}]', "after element 1"),
        (b'[{"a": 1}, {"b": }]', "element 2"),
    ],
)
def test_broken_json_arrays_fail_the_file(body, message):
    with pytest.raises(FileProblem, match=message):
        read(body, ".json")


class CountingStream(io.BytesIO):
    read_bytes = 0

    def read(self, size=-1):
        data = super().read(size)
        self.read_bytes += len(data)
        return data

    def read1(self, size=-1):
        return self.read(size)


def test_invalid_json_in_a_huge_array_fails_without_buffering_the_rest(monkeypatch):
    monkeypatch.setattr(bulk_rows, "MAX_ROW_CHARS", 1000)
    monkeypatch.setattr(bulk_rows, "CHUNK", 100)
    body = b'[{"a": 1}, {"b": nope}, ' + b", ".join(b'{"c": 1}' for _ in range(100_000)) + b"]"
    stream = CountingStream(body)
    with pytest.raises(FileProblem, match="element 2"):
        list(rows(stream, ".json"))
    assert 0 < stream.read_bytes < 20_000  # stopped soon after the bad element, of 1 MB
