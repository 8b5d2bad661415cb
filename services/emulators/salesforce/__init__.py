"""Salesforce emulator: OAuth, REST, sObject Collections, SOQL, Streaming API (CometD) with
Change Data Capture, and an admin API for seeding data and injecting faults."""

from services.emulators.salesforce.app import EMULATOR, SalesforceEmulator, create_app, run_forever, serve
from services.emulators.salesforce.config import SalesforceEmulatorConfig

__all__ = [
    "EMULATOR",
   "SalesforceEmulator", "SalesforceEmulatorConfig", "create_app", "run_forever", "serve"]
