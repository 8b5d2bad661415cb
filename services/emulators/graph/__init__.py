"""Local Microsoft Graph emulator (aiohttp): API under /v1.0, token endpoint at
/{tenant}/oauth2/v2.0/token, pre-authenticated upload URLs under /_upload, admin API under
/_admin. See app.py for `create_app`, `serve`, `main_args` and `run_forever`."""

from services.emulators.graph.app import create_app, main_args, run_forever, serve, state_of
from services.emulators.graph.config import GraphEmulatorConfig

__all__ = ["GraphEmulatorConfig", "create_app", "main_args", "run_forever", "serve", "state_of"]
