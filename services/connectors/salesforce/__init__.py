"""Salesforce connector: OAuth (auth), REST + sObject Collections (rest), CDC streaming on
aiosfstream-ng (streaming, replay) and SOQL catch-up (catchup). Field mapping: mapping.py."""

from services.connectors.salesforce.auth import SalesforceAuth, Token
from services.connectors.salesforce.catchup import catch_up, reread
from services.connectors.salesforce.replay import ALL_EVENTS, NEW_EVENTS, MemoryReplayStore, ReplayStore
from services.connectors.salesforce.rest import FileRef, SalesforceRest, SaveError, SaveResult
from services.connectors.salesforce.streaming import ALL_CHANGE_EVENTS, CdcMessage, CdcStream, entity_channel

__all__ = [
    "ALL_CHANGE_EVENTS",
    "ALL_EVENTS",
    "NEW_EVENTS",
    "CdcMessage",
    "CdcStream",
    "FileRef",
    "MemoryReplayStore",
    "ReplayStore",
    "SalesforceAuth",
    "SalesforceRest",
    "SaveError",
    "SaveResult",
    "Token",
    "catch_up",
    "entity_channel",
    "reread",
]
