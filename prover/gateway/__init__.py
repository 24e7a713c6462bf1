"""``zkmeter gateway``: an OpenAI-compatible metering reverse proxy (docs/gateway.md).

``app`` (the ASGI app), ``counting`` (what is billed, from OpenAI's JSON), ``report`` (first
attempt with the text, retries from the durable queue with counts), ``store`` (the SQLite
queue and receipts), ``config`` (``ZKMETER_GATEWAY_*``), ``upstream`` (a deterministic local
OpenAI-compatible server for tests and the demo), ``serve`` (uvicorn processes).
"""
