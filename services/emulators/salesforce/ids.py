"""Salesforce-shaped record ids: 15 significant characters plus the 3-character case suffix."""

from __future__ import annotations

import itertools
import re

_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID_RE = re.compile(r"^[A-Za-z0-9]{15}([A-Za-z0-5]{3})?$")

PREFIXES = {
    "Contact": "003",
    "Event": "00U",
    "Task": "00T",
    "ContentVersion": "068",
    "ContentDocument": "069",
    "ContentDocumentLink": "06A",
    "Attachment": "00P",
    "User": "005",
    "Organization": "00D",
}


def suffix(id15: str) -> str:
    """The checksum Salesforce appends so that ids survive case-insensitive systems."""
    out = ""
    for chunk in range(3):
        bits = 0
        for i, ch in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << i
        out += _SUFFIX[bits]
    return out


def to18(sf_id: str) -> str:
    return sf_id if len(sf_id) == 18 else sf_id + suffix(sf_id)


def is_valid(sf_id: object) -> bool:
    if not isinstance(sf_id, str) or not _ID_RE.match(sf_id):
        return False
    return len(sf_id) == 15 or suffix(sf_id[:15]) == sf_id[15:]


def _base62(n: int, width: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = _ALNUM[r] + out
    return out.rjust(width, "0")


class IdFactory:
    """Ids are unique per emulator instance and sortable per prefix like real ones."""

    def __init__(self, pod: str = "Dn") -> None:
        self._pod = pod
        self._counter = itertools.count(1)

    def new(self, prefix: str) -> str:
        id15 = prefix + self._pod + "0000" + _base62(next(self._counter), 6)
        return id15 + suffix(id15)
