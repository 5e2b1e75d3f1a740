"""Storage key construction.

Every key starts with the owning scope (account and mode), and in every user-supplied
component `%` and `#` are escaped (`%25`, `%23`), so `#` inside an event name, customer id
or identifier can never be read as a key separator (`a#b` and `a` never collide).
Everything else stays as it is: a character takes at most 4 bytes of UTF-8 in a key, so
a string of n characters takes at most 4n bytes. With the API's limits (100 characters
for event names, identifiers, customer ids) no key comes near DynamoDB's 1,024-byte sort
key or 2,048-byte partition key limit; `tests/unit/test_keys.py` checks the largest keys.
"""

from urllib.parse import unquote

SEP = "#"
MAX_PARTITION_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024


def part(value: str) -> str:
    """Encode one user string so it contains no separator."""
    return value.replace("%", "%25").replace(SEP, "%23")


def unpart(text: str) -> str:
    """The user string `part()` encoded."""
    return unquote(text)


def key(*parts: str) -> str:
    return SEP.join(parts)
