"""The sObject types the emulator knows, with the field properties the API enforces.

Only what the sync touches is modelled; the lists follow the standard objects (reference
§4) closely enough that real field names work and unknown ones fail with INVALID_FIELD.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FieldDef:
    name: str
    type: str  # id string textarea email phone picklist boolean datetime date int double reference base64 address
    createable: bool = True
    updateable: bool = True
    required: bool = False
    external_id: bool = False
    max_length: int | None = None
    picklist: tuple[str, ...] = ()
    # For references: the sObject types (by id prefix) the value may point at.
    reference_to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SObjectDef:
    name: str
    fields: dict[str, FieldDef] = field(default_factory=dict)
    cdc: bool = False
    # CDC nests: compound name -> {component in the nest: flat sObject field}
    compounds: dict[str, dict[str, str]] = field(default_factory=dict)

    def field(self, name: str) -> FieldDef | None:
        f = self.fields.get(name)
        if f is not None:
            return f
        # Field names are case-insensitive in the API.
        low = name.lower()
        return next((f for n, f in self.fields.items() if n.lower() == low), None)

    @property
    def external_ids(self) -> tuple[str, ...]:
        return tuple(n for n, f in self.fields.items() if f.external_id)


def _ro(name: str, type_: str, **kw: object) -> FieldDef:
    return FieldDef(name, type_, createable=False, updateable=False, **kw)  # type: ignore[arg-type]


def _system(owner: bool = True) -> list[FieldDef]:
    out = [
        _ro("Id", "id"),
        _ro("IsDeleted", "boolean"),
        _ro("CreatedDate", "datetime"),
        _ro("CreatedById", "reference", reference_to=("User",)),
        _ro("LastModifiedDate", "datetime"),
        _ro("LastModifiedById", "reference", reference_to=("User",)),
        _ro("SystemModstamp", "datetime"),
    ]
    if owner:
        out.append(FieldDef("OwnerId", "reference", reference_to=("User",)))
    return out


def _obj(name: str, fields: list[FieldDef], *, cdc: bool = False, compounds: dict[str, dict[str, str]] | None = None,
         owner: bool = True) -> SObjectDef:
    return SObjectDef(name, {f.name: f for f in _system(owner) + fields}, cdc=cdc, compounds=compounds or {})


LINK_FIELD = "exsf_Link_Id__c"
_LINK = FieldDef(LINK_FIELD, "string", external_id=True, max_length=255)

CONTACT = _obj(
    "Contact",
    [
        FieldDef("Salutation", "picklist", picklist=("Mr.", "Ms.", "Mrs.", "Dr.", "Prof.", "Mx.")),
        FieldDef("FirstName", "string", max_length=40),
        FieldDef("LastName", "string", required=True, max_length=80),
        _ro("Name", "string"),
        FieldDef("AccountId", "reference", reference_to=("Account",)),
        FieldDef("Email", "email", max_length=80),
        FieldDef("Phone", "phone", max_length=40),
        FieldDef("MobilePhone", "phone", max_length=40),
        FieldDef("HomePhone", "phone", max_length=40),
        FieldDef("OtherPhone", "phone", max_length=40),
        FieldDef("Fax", "phone", max_length=40),
        FieldDef("Title", "string", max_length=128),
        FieldDef("Department", "string", max_length=80),
        FieldDef("MailingStreet", "textarea", max_length=255),
        FieldDef("MailingCity", "string", max_length=40),
        FieldDef("MailingState", "string", max_length=80),
        FieldDef("MailingPostalCode", "string", max_length=20),
        FieldDef("MailingCountry", "string", max_length=80),
        FieldDef("MailingLatitude", "double"),
        FieldDef("MailingLongitude", "double"),
        FieldDef("MailingGeocodeAccuracy", "picklist"),
        _ro("MailingAddress", "address"),
        FieldDef("Description", "textarea", max_length=32000),
        _LINK,
    ],
    cdc=True,
    compounds={
        "Name": {"Salutation": "Salutation", "FirstName": "FirstName", "LastName": "LastName"},
        "MailingAddress": {
            "Street": "MailingStreet",
            "City": "MailingCity",
            "State": "MailingState",
            "PostalCode": "MailingPostalCode",
            "Country": "MailingCountry",
            "Latitude": "MailingLatitude",
            "Longitude": "MailingLongitude",
            "GeocodeAccuracy": "MailingGeocodeAccuracy",
        },
    },
)

RECURRENCE_TYPES = (
    "RecursDaily",
    "RecursEveryWeekday",
    "RecursWeekly",
    "RecursMonthly",
    "RecursMonthlyNth",
    "RecursYearly",
    "RecursYearlyNth",
)

EVENT = _obj(
    "Event",
    [
        FieldDef("WhoId", "reference", reference_to=("Contact",)),
        FieldDef("WhatId", "reference"),
        _ro("AccountId", "reference"),
        FieldDef("Subject", "string", max_length=255),
        FieldDef("Location", "string", max_length=255),
        FieldDef("IsAllDayEvent", "boolean"),
        FieldDef("ActivityDateTime", "datetime"),
        FieldDef("ActivityDate", "date"),
        FieldDef("DurationInMinutes", "int"),
        FieldDef("StartDateTime", "datetime"),
        FieldDef("EndDateTime", "datetime"),
        _ro("EndDate", "date"),
        FieldDef("Description", "textarea", max_length=32000),
        FieldDef("ShowAs", "picklist", picklist=("Busy", "OutOfOffice", "Free")),
        FieldDef("IsPrivate", "boolean"),
        FieldDef("IsReminderSet", "boolean"),
        FieldDef("ReminderDateTime", "datetime"),
        FieldDef("EventSubtype", "picklist", picklist=("Event",)),
        _ro("IsChild", "boolean"),
        _ro("IsGroupEvent", "boolean"),
        FieldDef("IsRecurrence", "boolean"),
        FieldDef("RecurrenceStartDateTime", "datetime"),
        FieldDef("RecurrenceEndDateOnly", "date"),
        FieldDef("RecurrenceTimeZoneSidKey", "picklist"),
        FieldDef("RecurrenceType", "picklist", picklist=RECURRENCE_TYPES),
        FieldDef("RecurrenceInterval", "int"),
        FieldDef("RecurrenceDayOfWeekMask", "int"),
        FieldDef("RecurrenceDayOfMonth", "int"),
        FieldDef("RecurrenceInstance", "picklist", picklist=("First", "Second", "Third", "Fourth", "Last")),
        FieldDef("RecurrenceMonthOfYear", "picklist"),
        _ro("RecurrenceActivityId", "reference"),
        _LINK,
    ],
    cdc=True,
)

TASK_STATUSES = ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred")
CLOSED_TASK_STATUSES = ("Completed",)

TASK = _obj(
    "Task",
    [
        FieldDef("WhoId", "reference", reference_to=("Contact",)),
        FieldDef("WhatId", "reference"),
        _ro("AccountId", "reference"),
        FieldDef("Subject", "string", max_length=255),
        FieldDef("ActivityDate", "date"),
        FieldDef("Status", "picklist", picklist=TASK_STATUSES),
        FieldDef("Priority", "picklist", picklist=("High", "Normal", "Low")),
        _ro("IsHighPriority", "boolean"),
        _ro("IsClosed", "boolean"),
        FieldDef("Description", "textarea", max_length=32000),
        FieldDef("TaskSubtype", "picklist", picklist=("Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn")),
        FieldDef("CompletedDateTime", "datetime", createable=False, updateable=False),
        FieldDef("IsReminderSet", "boolean"),
        FieldDef("ReminderDateTime", "datetime"),
        FieldDef("CallType", "picklist", picklist=("Internal", "Inbound", "Outbound")),
        _ro("IsArchived", "boolean"),
        _LINK,
    ],
    cdc=True,
)

CONTENT_VERSION = _obj(
    "ContentVersion",
    [
        FieldDef("Title", "string", max_length=255),
        FieldDef("PathOnClient", "string", required=True, max_length=500),
        FieldDef("VersionData", "base64", required=True, updateable=False),
        FieldDef("FirstPublishLocationId", "reference", updateable=False),
        FieldDef("Description", "textarea", max_length=1000),
        FieldDef("ContentDocumentId", "reference", updateable=False, reference_to=("ContentDocument",)),
        _ro("ContentSize", "int"),
        _ro("FileExtension", "string"),
        _ro("FileType", "string"),
        _ro("IsLatest", "boolean"),
        _ro("VersionNumber", "string"),
    ],
)

CONTENT_DOCUMENT = _obj(
    "ContentDocument",
    [
        FieldDef("Title", "string", max_length=255),
        _ro("LatestPublishedVersionId", "reference", reference_to=("ContentVersion",)),
        _ro("FileExtension", "string"),
        _ro("FileType", "string"),
        _ro("ContentSize", "int"),
    ],
)

CONTENT_DOCUMENT_LINK = _obj(
    "ContentDocumentLink",
    [
        FieldDef("ContentDocumentId", "reference", required=True, updateable=False, reference_to=("ContentDocument",)),
        FieldDef("LinkedEntityId", "reference", required=True, updateable=False),
        FieldDef("ShareType", "picklist", picklist=("V", "C", "I")),
        FieldDef("Visibility", "picklist", picklist=("AllUsers", "InternalUsers", "SharedUsers")),
    ],
    owner=False,
)

ATTACHMENT = _obj(
    "Attachment",
    [
        FieldDef("ParentId", "reference", required=True, updateable=False),
        FieldDef("Name", "string", required=True, max_length=255),
        FieldDef("Body", "base64", required=True),
        _ro("BodyLength", "int"),
        FieldDef("ContentType", "string", max_length=120),
        FieldDef("IsPrivate", "boolean"),
        FieldDef("Description", "textarea", max_length=500),
    ],
)

SOBJECTS: dict[str, SObjectDef] = {
    o.name: o for o in (CONTACT, EVENT, TASK, CONTENT_VERSION, CONTENT_DOCUMENT, CONTENT_DOCUMENT_LINK, ATTACHMENT)
}


def sobject(name: str) -> SObjectDef | None:
    o = SOBJECTS.get(name)
    if o is not None:
        return o
    low = name.lower()
    return next((o for n, o in SOBJECTS.items() if n.lower() == low), None)
