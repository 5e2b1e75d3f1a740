"""The local runner's AWS endpoint: DynamoDB calls answered on the fast path are the same
answers moto's own server gives, and the HTTP server serves boto3 (keep-alive, S3 uploads).

Every request below is sent twice, to two identical tables: once through the endpoint's
fast path and once straight to moto's WSGI application; the answers must be equal (status,
error type, body) once the table names are swapped.
"""

import json
import socket

import boto3
import pytest

from metering_local import aws_endpoint
from metering_local.http11 import Request

CREDENTIAL = (
    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request,"
    " SignedHeaders=host, Signature=0"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint():
    port = _free_port()
    server = aws_endpoint.start_moto("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for name in ("FastT", "MotoT"):
        client.create_table(
            TableName=name,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
    yield server, url
    server.stop()


def _request(action: str, body: dict, api: str = "DynamoDB_20120810") -> Request:
    service = "dynamodb"
    data = json.dumps(body).encode()
    headers = [
        ("Host", "localhost"),
        ("X-Amz-Target", f"{api}.{action}"),
        ("Content-Type", "application/x-amz-json-1.0"),
        ("Authorization", CREDENTIAL.format(service=service)),
        ("Content-Length", str(len(data))),
    ]
    request = Request("POST", "/", "HTTP/1.1", headers, data)
    request.lower = {k.lower(): v for k, v in headers}
    return request


def _both(server, action: str, body: dict, api: str = "DynamoDB_20120810"):
    """(fast answer, moto's answer), bodies parsed, the second table's name replaced by the first's."""
    fast_body = json.loads(json.dumps(body).replace("MotoT", "FastT"))
    moto_body = json.loads(json.dumps(body).replace("FastT", "MotoT"))
    fast = server.handle(_request(action, fast_body, api))
    slow = server.wsgi(_request(action, moto_body, api))
    return _normal(fast), _normal(slow)


def _normal(answer, rename: bool = True):
    status, headers, body = answer
    headers = dict(headers)
    assert isinstance(body, bytes)
    text = body.decode()
    parsed = json.loads(text.replace("MotoT", "FastT") if rename else text) if text else None
    error = {k.lower(): v for k, v in headers.items()}.get("x-amzn-errortype")
    return status, error, parsed


ITEM = {
    "pk": {"S": "A#1"},
    "sk": {"S": "E#1"},
    "n": {"N": "12.50"},
    "m": {
        "M": {"a": {"L": [{"S": "x"}, {"N": "1"}, {"BOOL": True}, {"NULL": True}]}, "ss": {"SS": ["a", "b"]}}
    },
    "ns": {"NS": ["1", "2.5"]},
    "text": {"S": "héllo #%"},
}

CALLS = [
    ("PutItem", {"TableName": "FastT", "Item": ITEM}),
    (
        "PutItem",
        {"TableName": "FastT", "Item": {**ITEM, "sk": {"S": "E#2"}}, "ReturnConsumedCapacity": "TOTAL"},
    ),
    (
        "PutItem",
        {
            "TableName": "FastT",
            "Item": ITEM,
            "ConditionExpression": "attribute_not_exists(pk)",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        },
    ),
    ("PutItem", {"TableName": "FastT", "Item": ITEM, "ReturnValues": "ALL_OLD"}),
    (
        "GetItem",
        {"TableName": "FastT", "Key": {"pk": {"S": "A#1"}, "sk": {"S": "E#1"}}, "ConsistentRead": True},
    ),
    ("GetItem", {"TableName": "FastT", "Key": {"pk": {"S": "A#1"}, "sk": {"S": "nope"}}}),
    (
        "GetItem",
        {
            "TableName": "FastT",
            "Key": {"pk": {"S": "A#1"}, "sk": {"S": "E#1"}},
            "ProjectionExpression": "#n, m.a[0]",
            "ExpressionAttributeNames": {"#n": "n"},
        },
    ),
    ("GetItem", {"TableName": "Missing", "Key": {"pk": {"S": "A#1"}, "sk": {"S": "E#1"}}}),
    ("GetItem", {"TableName": "FastT", "Key": {"pk": {"S": "A#1"}}}),
    (
        "UpdateItem",
        {
            "TableName": "FastT",
            "Key": {"pk": {"S": "A#1"}, "sk": {"S": "E#1"}},
            "UpdateExpression": "SET n = n + :one, #t = :t ADD c :one REMOVE ns",
            "ExpressionAttributeNames": {"#t": "text"},
            "ExpressionAttributeValues": {":one": {"N": "1"}, ":t": {"S": "bye"}},
            "ReturnValues": "ALL_NEW",
        },
    ),
    (
        "UpdateItem",
        {
            "TableName": "FastT",
            "Key": {"pk": {"S": "A#1"}, "sk": {"S": "E#1"}},
            "UpdateExpression": "SET n = :v",
            "ConditionExpression": "n = :old",
            "ExpressionAttributeValues": {":v": {"N": "1"}, ":old": {"N": "999"}},
        },
    ),
    (
        "Query",
        {
            "TableName": "FastT",
            "KeyConditionExpression": "pk = :p AND begins_with(sk, :e)",
            "ExpressionAttributeValues": {":p": {"S": "A#1"}, ":e": {"S": "E#"}},
            "Limit": 1,
            "ConsistentRead": True,
        },
    ),
    (
        "Query",
        {
            "TableName": "FastT",
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": "A#1"}},
            "ScanIndexForward": False,
            "Select": "COUNT",
        },
    ),
    ("Scan", {"TableName": "FastT", "FilterExpression": "attribute_exists(c)"}),
    (
        "BatchWriteItem",
        {
            "RequestItems": {
                "FastT": [
                    {"PutRequest": {"Item": {"pk": {"S": "B"}, "sk": {"S": str(i)}, "v": {"N": str(i)}}}}
                    for i in range(5)
                ]
                + [{"DeleteRequest": {"Key": {"pk": {"S": "A#1"}, "sk": {"S": "E#2"}}}}]
            }
        },
    ),
    (
        "BatchGetItem",
        {
            "RequestItems": {
                "FastT": {
                    "Keys": [{"pk": {"S": "B"}, "sk": {"S": str(i)}} for i in range(3)],
                    "ConsistentRead": True,
                }
            }
        },
    ),
    (
        "TransactWriteItems",
        {
            "TransactItems": [
                {"Put": {"TableName": "FastT", "Item": {"pk": {"S": "T"}, "sk": {"S": "1"}}}},
                {
                    "Update": {
                        "TableName": "FastT",
                        "Key": {"pk": {"S": "B"}, "sk": {"S": "1"}},
                        "UpdateExpression": "SET v = v + :d",
                        "ExpressionAttributeValues": {":d": {"N": "10"}},
                    }
                },
            ]
        },
    ),
    (
        "TransactWriteItems",
        {
            "TransactItems": [
                {"Put": {"TableName": "FastT", "Item": {"pk": {"S": "T"}, "sk": {"S": "2"}}}},
                {
                    "ConditionCheck": {
                        "TableName": "FastT",
                        "Key": {"pk": {"S": "B"}, "sk": {"S": "1"}},
                        "ConditionExpression": "v = :x",
                        "ExpressionAttributeValues": {":x": {"N": "-1"}},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
            ]
        },
    ),
    (
        "TransactGetItems",
        {"TransactItems": [{"Get": {"TableName": "FastT", "Key": {"pk": {"S": "B"}, "sk": {"S": "1"}}}}]},
    ),
    (
        "DeleteItem",
        {"TableName": "FastT", "Key": {"pk": {"S": "T"}, "sk": {"S": "1"}}, "ReturnValues": "ALL_OLD"},
    ),
    ("Query", {"TableName": "FastT", "KeyConditionExpression": "bad ==="}),
    (
        "BatchExecuteStatement",
        {
            "Statements": [
                {
                    "Statement": "INSERT INTO \"FastT\" VALUE {'pk': ?, 'sk': ?, 'v': ?}",
                    "Parameters": [{"S": "P"}, {"S": str(i)}, {"N": str(i)}],
                }
                for i in range(3)
            ]
            + [
                {  # already there
                    "Statement": "INSERT INTO \"FastT\" VALUE {'pk': ?, 'sk': ?}",
                    "Parameters": [{"S": "B"}, {"S": "1"}],
                },
                {
                    "Statement": 'SELECT * FROM "FastT" WHERE pk = ? AND sk = ?',
                    "Parameters": [{"S": "P"}, {"S": "0"}],
                },
            ]
        },
    ),
    (
        "ExecuteStatement",
        {"Statement": 'SELECT * FROM "FastT" WHERE pk = ?', "Parameters": [{"S": "P"}]},
    ),
]


@pytest.mark.parametrize("action,body", CALLS, ids=[f"{i}-{c[0]}" for i, c in enumerate(CALLS)])
def test_fast_answers_equal_motos(endpoint, action, body):
    server, _url = endpoint
    fast, slow = _both(server, action, body)
    assert fast == slow


def test_stream_reads_equal_motos(endpoint):
    server, _url = endpoint
    arns = {}
    for name in ("FastT", "MotoT"):
        described = json.loads(server.wsgi(_request("DescribeTable", {"TableName": name}))[2])
        arns[name] = described["Table"]["LatestStreamArn"]
    answers = []
    for name, run in (("FastT", server.handle), ("MotoT", server.wsgi)):
        api = "DynamoDBStreams_20120810"
        stream = _normal(run(_request("DescribeStream", {"StreamArn": arns[name]}, api)), rename=False)
        shard = stream[2]["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = _normal(
            run(
                _request(
                    "GetShardIterator",
                    {"StreamArn": arns[name], "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"},
                    api,
                )
            ),
            rename=False,
        )
        records = _normal(run(_request("GetRecords", {"ShardIterator": iterator[2]["ShardIterator"]}, api)))
        listed = _normal(run(_request("ListStreams", {"TableName": name}, api)))
        answers.append((stream, records, listed))
    (fast_stream, fast_records, fast_list), (slow_stream, slow_records, slow_list) = answers
    assert fast_stream[:2] == slow_stream[:2] == (200, None)
    assert _shape(fast_stream[2]) == _shape(slow_stream[2])
    assert fast_records[0] == slow_records[0] == 200
    assert len(fast_records[2]["Records"]) == len(slow_records[2]["Records"]) > 10
    for fast, slow in zip(fast_records[2]["Records"], slow_records[2]["Records"], strict=True):
        for record in (fast, slow):
            record.pop("eventID")
            assert isinstance(record["dynamodb"].pop("ApproximateCreationDateTime"), int | float)
            assert isinstance(record["dynamodb"].pop("SizeBytes"), int)  # counts the digits of the time
        assert fast == slow
    assert _shape(fast_list) == _shape(slow_list)


def _shape(value):
    """The value with every string that names a table, stream or time replaced by its type."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def test_boto3_keeps_its_connection_and_s3_uploads_work(endpoint, tmp_path, monkeypatch):
    server, url = endpoint
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    dynamodb = session.client("dynamodb", endpoint_url=url, region_name="us-east-1")
    dynamodb.get_item(TableName="FastT", Key={"pk": {"S": "B"}, "sk": {"S": "1"}})
    connections = []
    accept = server.server.process_request
    monkeypatch.setattr(server.server, "process_request", lambda *a: connections.append(a) or accept(*a))
    for _ in range(5):
        dynamodb.get_item(TableName="FastT", Key={"pk": {"S": "B"}, "sk": {"S": "1"}})
    assert connections == []  # the first call's connection, kept open
    monkeypatch.undo()

    s3 = session.client("s3", endpoint_url=url, region_name="us-east-1")
    s3.create_bucket(Bucket="runner-endpoint-test")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (9 * 1024 * 1024))  # a multipart upload
    s3.upload_file(str(big), "runner-endpoint-test", "uploads/big.bin")
    s3.put_object(
        Bucket="runner-endpoint-test", Key="uploads/a b_c.txt", Body=b"hello", Metadata={"my_key": "v"}
    )
    listed = s3.list_objects_v2(Bucket="runner-endpoint-test", Prefix="uploads/")
    assert sorted(o["Key"] for o in listed["Contents"]) == ["uploads/a b_c.txt", "uploads/big.bin"]
    got = s3.get_object(Bucket="runner-endpoint-test", Key="uploads/a b_c.txt")
    assert got["Body"].read() == b"hello" and got["Metadata"] == {"my_key": "v"}
    assert (
        s3.head_object(Bucket="runner-endpoint-test", Key="uploads/big.bin")["ContentLength"]
        == big.stat().st_size
    )
    sqs = session.client("sqs", endpoint_url=url, region_name="us-east-1")
    queue = sqs.create_queue(QueueName="runner-endpoint-test")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="m")
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=queue).get("Messages", [])] == ["m"]


def test_a_large_item_is_refused_as_moto_refuses_it(endpoint):
    server, _url = endpoint
    item = {"pk": {"S": "big"}, "sk": {"S": "1"}, **{f"a{i}": {"S": "x" * 50_000} for i in range(9)}}
    fast, slow = _both(server, "PutItem", {"TableName": "FastT", "Item": item})
    assert fast == slow and fast[0] == 400 and "size" in json.dumps(fast[2]).lower()
