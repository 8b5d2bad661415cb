"""Which Salesforce records of synced types the ingestor still keeps to itself."""

from __future__ import annotations

from services.ingest_salesforce.events import not_synced, sobject_fields


def test_email_tasks_and_series_occurrences_are_not_published() -> None:
    assert not_synced("task", {"TaskSubtype": "Email"}) == "email_task"
    assert not_synced("task", {"TaskSubtype": "Task"}) is None
    child = {"IsRecurrence": False, "RecurrenceActivityId": "00U000000000001AAA"}
    assert not_synced("event", child) == "series_occurrence"
    # The series master (and a plain event) is what syncs.
    assert not_synced("event", {"IsRecurrence": True, "RecurrenceActivityId": None}) is None
    assert not_synced("event", {"Subject": "One-off"}) is None


def test_re_reads_ask_for_the_fields_the_filters_need() -> None:
    assert {"IsRecurrence", "RecurrenceActivityId"} <= set(sobject_fields("event"))
    assert "TaskSubtype" in sobject_fields("task")
