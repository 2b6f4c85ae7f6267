"""The dashboard's web app (FastAPI): the page, its assets, plotly.js from the installed plotly
package, and a JSON API over one :class:`~probes.dashboard.session.Session`. Nothing is
fetched from the network; every asset comes from installed packages.

Replies stream as NDJSON lines. Generation runs in its own thread and commits to the session
whatever happens to the client, so a tab closed mid-reply loses nothing from the export.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from probes.dashboard.session import MAX_MESSAGE_TOKENS, BusyError, Session
from probes.errors import ProbesError

STATIC = Path(str(resources.files("probes.dashboard").joinpath("static")))
_END = object()


def plotly_js() -> Path:
    """plotly.min.js shipped inside the installed plotly package."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise ProbesError(f"the installed plotly has no {path.name}; reinstall plotly")
    return path


def _error(exc: ProbesError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=409 if isinstance(exc, BusyError) else 400)


def _stream(session: Session, regenerate: bool) -> Iterator[bytes]:
    """Run the reply in a thread; yield its tokens, then the finished turn, as NDJSON."""
    lines: queue.Queue[Any] = queue.Queue()

    def work() -> None:
        try:
            turn = session.reply(lambda c, t: lines.put({"channel": c, "token": t}), regenerate)
            lines.put({"done": True, **turn})
        except ProbesError as exc:
            lines.put({"error": str(exc)})
        except Exception as exc:  # the server keeps serving; the page shows the line
            lines.put({"error": f"generation failed: {exc.__class__.__name__}: {exc}"})
        finally:
            lines.put(_END)

    threading.Thread(target=work, name="probes-dashboard-reply", daemon=True).start()
    while (item := lines.get()) is not _END:
        yield (json.dumps(item) + "\n").encode()


def create_app(session: Session, info: dict[str, Any] | None = None) -> FastAPI:
    """The FastAPI app serving ``session``; ``info`` is merged into ``GET /api/info``."""
    app = FastAPI(title="probes dashboard", docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    plotly_path = plotly_js()
    engine = session.engine

    @app.get("/")
    def index() -> Any:
        return FileResponse(STATIC / "index.html")

    @app.get("/vendor/plotly.min.js")
    def plotly() -> Any:
        return FileResponse(plotly_path, media_type="application/javascript")

    @app.get("/api/info")
    def api_info() -> Any:
        bundle = engine.bundle
        return {
            "model": {"name": engine.model.name, "fingerprint": engine.model.fingerprint},
            "n_layers": engine.model.n_layers,
            "frame": bundle.frame,
            "attributes": [
                {"name": name, "classes": list(r.classes), "dataset": r.dataset}
                for name, r in bundle.readers.items()
            ],
            "readers": bundle.summary(),
            "steering": {
                "layers": list(session.settings.layers),
                "strength": session.settings.strength,
                "scope": "generation",
            },
            "limits": {"message_tokens": MAX_MESSAGE_TOKENS},
            **(info or {}),
        }

    @app.get("/api/session")
    def api_session() -> Any:
        return session.state()

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            raise ProbesError("the request body is not JSON") from None
        if not isinstance(data, dict):
            raise ProbesError("the request body must be a JSON object")
        return data

    @app.post("/api/message")
    async def api_message(request: Request) -> Any:
        try:
            data = await body(request)
            return session.user_message(data.get("text"))
        except ProbesError as exc:
            return _error(exc)

    def reply_response(regenerate: bool) -> Any:
        if session.lock.locked():
            return _error(BusyError("the model is busy with another request (another tab?)"))
        return StreamingResponse(_stream(session, regenerate), media_type="application/x-ndjson")

    @app.post("/api/reply")
    def api_reply() -> Any:
        return reply_response(False)

    @app.post("/api/regenerate")
    def api_regenerate() -> Any:
        return reply_response(True)

    @app.post("/api/pin")
    async def api_pin(request: Request) -> Any:
        try:
            data = await body(request)
            strength = data.get("strength")
            if strength is not None and not isinstance(strength, int | float):
                raise ProbesError("strength must be a number")
            layers = data.get("layers")
            if layers is not None and not (
                isinstance(layers, list) and all(isinstance(k, int) for k in layers)
            ):
                raise ProbesError("layers must be a list of layer numbers")
            pins = session.set_pin(str(data.get("attribute")), data.get("class"), strength, layers)
            return {"pins": pins}
        except ProbesError as exc:
            return _error(exc)

    @app.post("/api/reset")
    def api_reset() -> Any:
        if session.lock.locked():
            return _error(BusyError("the model is busy; reset when the reply has finished"))
        session.reset()
        return session.state()

    @app.get("/api/export")
    def api_export() -> Any:
        return JSONResponse(
            session.export(),
            headers={"Content-Disposition": 'attachment; filename="probes-session.json"'},
        )

    return app
