"""Recently answered commands, by command_id, so a redelivered command is answered with
the same result and no API call.

Filled as soon as the target answered (not at commit): the target's state is what the
entry describes, so a redelivery after an aborted transaction is answered from here.
Bounded in size (LRU) and age: a command id repeats only for the same link, base version
and content, and a short memory keeps a legitimate repeat much later (e.g. re-creating a
deleted item with identical fields) from being answered with a stale result.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from services.core.envelopes import CommandResult


class ResultCache:
    def __init__(self, max_size: int, ttl_s: float) -> None:
        self.max_size = max_size
        self.ttl_s = ttl_s
        self._d: OrderedDict[str, tuple[float, CommandResult]] = OrderedDict()
        self.hits = 0

    def get(self, command_id: str) -> CommandResult | None:
        got = self._d.get(command_id)
        if got is None:
            return None
        at, result = got
        if time.monotonic() - at > self.ttl_s:
            del self._d[command_id]
            return None
        self._d.move_to_end(command_id)
        self.hits += 1
        return result

    def put(self, result: CommandResult) -> None:
        self._d[result.command_id] = (time.monotonic(), result)
        self._d.move_to_end(result.command_id)
        while len(self._d) > self.max_size:
            self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)
