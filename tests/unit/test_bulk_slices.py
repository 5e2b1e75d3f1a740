"""Slices of a plain .csv / .jsonl file: read one by one, they give exactly the file's rows,
numbered as in the whole file."""

import io

from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from metering.bulk_rows import rows, slice_plan

HEADER = "identifier,timestamp,event_name,payload_value"
LINES = st.one_of(
    st.builds(
        lambda i, v: f"id{i},1795478400,tokens,{v}", st.integers(0, 99), st.sampled_from(["1", "x", "2.5"])
    ),
    st.just(""),
    st.just("  "),
    st.just("a,b"),  # wrong number of cells
    st.text(alphabet="é€𝄞 ,x", max_size=12),
)


def read_sliced(data: bytes, fmt: str, target: int) -> list:
    plan = slice_plan(io.BytesIO(data), fmt, target)
    if not plan:
        return list(rows(io.BytesIO(data), fmt))
    assert plan[0][0] == 0 and plan[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in zip(plan, plan[1:], strict=False))  # contiguous, no gap
    out = []
    for start, end, before, header_end in plan:
        head = data[:header_end] if start > 0 else b""
        stream = io.BytesIO(head + data[start:end])
        out += [(n + before, fields) for n, fields in rows(stream, fmt, whole=False)]
    return out


@examples(max_examples=200, deadline=None)
@given(
    lines=st.lists(LINES, max_size=40),
    newline=st.sampled_from(["\n", "\r\n"]),
    target=st.integers(1, 80),
    bom=st.booleans(),
    blank_before=st.integers(0, 2),
    trailing=st.booleans(),
)
def test_csv_slices_read_the_rows_of_the_whole_file(lines, newline, target, bom, blank_before, trailing):
    text = newline * blank_before + newline.join([HEADER, *lines]) + (newline if trailing else "")
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode()
    assert read_sliced(data, ".csv", target) == list(rows(io.BytesIO(data), ".csv"))


@examples(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.one_of(
            st.just('{"event_name": "t", "payload": {"value": "1"}}'), st.just(""), st.just("not json")
        ),
        min_size=1,
        max_size=40,
    ),
    newline=st.sampled_from(["\n", "\r\n"]),
    target=st.integers(1, 80),
)
def test_jsonl_slices_read_the_rows_of_the_whole_file(lines, newline, target):
    data = newline.join(lines).encode()
    whole = list(rows(io.BytesIO(data), ".jsonl", whole=False))
    assert read_sliced(data, ".jsonl", target) == whole


def test_files_where_lines_are_not_rows_are_not_split():
    quoted = f'{HEADER}\n"a\nb",1,tokens,1\n'.encode() * 20
    lone_cr = f"{HEADER}\rx,1,tokens,1\r".encode() * 20
    assert slice_plan(io.BytesIO(quoted), ".csv", 10) == []
    assert slice_plan(io.BytesIO(lone_cr), ".csv", 10) == []
    assert slice_plan(io.BytesIO(b'{"a": 1}\r{"a": 2}\r' * 20), ".jsonl", 10) == []


def test_a_large_file_is_cut_near_the_target_at_line_ends():
    data = (HEADER + "\n").encode() + b"".join(f"id{i},1,tokens,1\n".encode() for i in range(100_000))
    plan = slice_plan(io.BytesIO(data), ".csv", 1 << 18)
    assert 8 <= len(plan) <= 9
    assert all(data[end - 1 : end] == b"\n" for _, end, _, _ in plan)
    assert [before for _, _, before, _ in plan] == [
        data[len(HEADER) + 1 : start].count(b"\n") if start else 0 for start, _, _, _ in plan
    ]
