"""Storage key construction.

Every key starts with the owning account, and every user-supplied component is
percent-encoded, so `#`, `/`, `:` and unicode inside an event name, customer id or
identifier can never be read as a key separator (`a#b` and `a` never collide).
"""

from urllib.parse import quote

SEP = "#"


def part(value: str) -> str:
    """Encode one user string so it contains no separator."""
    return quote(value, safe="")


def key(*parts: str) -> str:
    return SEP.join(parts)
