"""A minimal ASGI app answering /api/health like Prefect's server, for the background server's
lifecycle tests (a real Prefect server takes 4-11 s to start; tests/test_server.py has one too).

HEALTH_APP_DELAY_S delays its start-up, so that tests can start two commands while one is booting.
"""

from __future__ import annotations

import asyncio
import os


def create_app():
    delay = float(os.environ.get("HEALTH_APP_DELAY_S", "0"))

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await asyncio.sleep(delay)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            ok = scope["path"] == "/api/health"
            await send({"type": "http.response.start", "status": 200 if ok else 404,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b"true" if ok else b"{}"})

    return app
