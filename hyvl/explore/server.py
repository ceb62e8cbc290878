"""The explorer's local server: the page and a small JSON API over an :class:`Explorer`.

Starlette (routing, responses) on uvicorn (the ASGI server): a maintained pair with few
dependencies of its own (anyio, h11), where a hand-written http.server would need its own
threading, request parsing and error handling, and Gradio or FastAPI would bring a much larger
tree for six routes. The search runs here, on the whole index; the page only draws.

Routes: ``/`` the page; ``/api/meta``; ``/api/points?box=x0,y0,x1,y1&limit=N``;
``/api/item?row=R``; ``/api/query?text=T&kind=K`` (GET) or the image bytes as the body of a
POST to ``/api/query?kind=K``; ``/api/thumb?row=R`` (JPEG).
"""

from __future__ import annotations

import asyncio
import threading

from hyvl.errors import HyvlError

MAX_UPLOAD = 20 << 20  # bytes of an uploaded query image


def make_app(explorer):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    page = explorer.page()
    lock = threading.Lock()  # one torch computation at a time; the event loop stays free

    async def run(fn, *args, **kwargs):
        def locked():
            with lock:
                return fn(*args, **kwargs)

        return await asyncio.to_thread(locked)

    def bad(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def number(request: Request, name: str, cast=int, default=None):
        raw = request.query_params.get(name)
        if raw is None:
            if default is None:
                raise HyvlError(f"{name}: missing")
            return default
        try:
            return cast(raw)
        except ValueError as err:
            raise HyvlError(f"{name}={raw!r}: not a number") from err

    async def index(request: Request):
        return HTMLResponse(page)

    async def meta(request: Request):
        return JSONResponse(explorer.meta())

    async def points(request: Request):
        box = request.query_params.get("box")
        try:
            limit = min(number(request, "limit", int, 4000), 20000)
            parsed = [float(v) for v in box.split(",")] if box else None
            if parsed is not None and len(parsed) != 4:
                raise ValueError
        except HyvlError as err:
            return bad(str(err))
        except ValueError:
            return bad(f"box={box!r}: give x0,y0,x1,y1 (four numbers)")
        return JSONResponse(await run(explorer.points, parsed, limit))

    async def item(request: Request):
        try:
            row = number(request, "row")
            return JSONResponse(await run(explorer.item, row))
        except HyvlError as err:
            return bad(str(err))

    async def query(request: Request):
        kind = request.query_params.get("kind", "auto")
        try:
            if request.method == "POST":
                body = await request.body()
                if not body or len(body) > MAX_UPLOAD:
                    return bad(f"upload an image of 1 byte to {MAX_UPLOAD >> 20} MiB")
                answer = await run(explorer.query, image=body, kind=kind)
            else:
                answer = await run(explorer.query, text=request.query_params.get("text", ""),
                                   kind=kind)  # fmt: skip
        except HyvlError as err:
            return bad(str(err))
        return JSONResponse(answer)

    async def thumb(request: Request):
        try:
            row = number(request, "row")
        except HyvlError as err:
            return bad(str(err))
        data = await run(explorer.thumb, row)
        if data is None:
            return bad(f"no picture for item {row}", 404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/meta", meta),
            Route("/api/points", points),
            Route("/api/item", item),
            Route("/api/query", query, methods=["GET", "POST"]),
            Route("/api/thumb", thumb),
        ]
    )


class Serving:
    """A uvicorn server on a thread (``with Serving(app, port) as url: ...``): for tests and
    notebooks; ``hyvl explore`` runs uvicorn in the foreground instead."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import socket

        import uvicorn

        self.sock = socket.socket()
        self.sock.bind((host, port))
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> str:
        import time

        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            raise HyvlError(f"the explorer's server did not start at {self.url}")
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()
