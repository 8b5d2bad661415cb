"""Pure parts of the writer: per-link waves and groups, the bounded retry loop, error
classification and the result cache (no I/O)."""

from __future__ import annotations

from services.core.envelopes import Command
from services.core.errors import NotFoundError, PermanentError, PreconditionFailed, TransientError
from services.writer.cache import ResultCache
from services.writer.config import WriterSettings
from services.writer.grouping import GroupKey, Item, waves
from services.writer.outcome import Done, Later, Outcome, Transient, applied, result_of
from services.writer.retry import classify, with_retries

SETTINGS = WriterSettings(max_attempts=3, backoff_base_s=0.0, backoff_max_s=0.0, throttle_default_s=7.0,
                          request_limit_backoff_s=60.0)


def cmd(link: str, *, target: str = "exchange", action: str = "create", user: str = "a@x", entity: str = "contact",
        n: int = 0) -> Command:
    return Command("t1", user, target, entity, action, link, None if action == "create" else "id1",  # type: ignore[arg-type]
                   {"n": n})


def test_commands_of_one_link_go_to_successive_waves_and_groups_split_by_call_shape() -> None:
    items = [
        Item(0, cmd("L1")),
        Item(1, cmd("L2")),
        Item(2, cmd("L1", action="update", n=1)),
        Item(3, cmd("L3", user="b@x")),
        Item(4, cmd("L1", action="delete", n=2)),
        Item(5, cmd("S1", target="salesforce", user="a@x")),
        Item(6, cmd("S2", target="salesforce", user="b@x")),
        Item(7, cmd("L1", target="salesforce")),  # same link id, other target: independent
    ]
    ws = waves(items)
    assert len(ws) == 3
    first = ws[0]
    assert [i.index for i in first[GroupKey("t1", "exchange", "a@x", "contact", "create")]] == [0, 1]
    assert [i.index for i in first[GroupKey("t1", "exchange", "b@x", "contact", "create")]] == [3]
    # Salesforce groups ignore the user (OwnerId is a field): one collection call.
    assert [i.index for i in first[GroupKey("t1", "salesforce", "", "contact", "create")]] == [5, 6, 7]
    assert [i.index for g in ws[1].values() for i in g] == [2]
    assert [i.index for g in ws[2].values() for i in g] == [4]


async def test_retry_loop_retries_transients_then_fails_with_the_reason() -> None:
    calls: list[list[int]] = []
    slept: list[float] = []

    async def attempt(pending: dict[int, Command], n: int) -> dict[int, Outcome | Transient]:
        calls.append(sorted(pending))
        out: dict[int, Outcome | Transient] = {}
        for i, c in pending.items():
            out[i] = applied(c) if i == 0 and n == 1 else Transient(f"HTTP 500 (attempt {n})")
        return out

    async def sleep(s: float) -> None:
        slept.append(s)

    got = await with_retries({0: cmd("A"), 1: cmd("B")}, attempt, SETTINGS, sleep=sleep)
    assert calls == [[0, 1], [0, 1], [1]]
    assert len(slept) == 2
    assert isinstance(got[0], Done) and got[0].result.status == "applied"
    assert isinstance(got[1], Done) and got[1].result.status == "failed" and got[1].deadletter
    assert "HTTP 500 (attempt 2)" in (got[1].result.error or "")


def test_classification() -> None:
    c = cmd("A", action="update")
    throttled = classify(c, TransientError("429", retry_after=3.0, status=429), SETTINGS)
    assert isinstance(throttled, Later) and throttled.backoff_s == 3.0
    limit = classify(c, TransientError("limit", status=403, code="REQUEST_LIMIT_EXCEEDED"), SETTINGS)
    assert isinstance(limit, Later) and limit.backoff_s == 60.0
    unavailable = classify(c, TransientError("503", status=503), SETTINGS)
    assert isinstance(unavailable, Later) and unavailable.backoff_s == 7.0
    assert isinstance(classify(c, TransientError("500", status=500), SETTINGS), Transient)
    conflict = classify(c, PreconditionFailed("412", status=412), SETTINGS)
    assert isinstance(conflict, Done) and conflict.result.status == "conflict" and conflict.deadletter is None
    gone = classify(c, NotFoundError("404", status=404), SETTINGS)
    assert isinstance(gone, Done) and gone.result.status == "gone"
    missing_folder = classify(cmd("A"), NotFoundError("404", status=404), SETTINGS)
    assert isinstance(missing_folder, Done) and missing_folder.result.status == "failed"
    bad = classify(c, PermanentError("400 bad", status=400), SETTINGS)
    assert isinstance(bad, Done) and bad.result.status == "failed" and bad.deadletter == "400 bad"


def test_result_cache_is_bounded() -> None:
    cache = ResultCache(max_size=2, ttl_s=3600)
    rs = [result_of(cmd(f"L{n}", n=n), "applied", target_id=str(n)) for n in range(3)]
    for r in rs:
        cache.put(r)
    assert cache.get(rs[0].command_id) is None
    assert cache.get(rs[2].command_id) == rs[2]
    expired = ResultCache(max_size=2, ttl_s=-1.0)  # everything is already too old
    expired.put(rs[0])
    assert expired.get(rs[0].command_id) is None
