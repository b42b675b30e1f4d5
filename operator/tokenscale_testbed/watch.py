"""Watches of the API emulator: streams of ADDED/MODIFIED/DELETED events, as kopf reads them.

A watch from ``resourceVersion`` 0 (or none) starts with the current objects as ADDED; from a
later one it replays the events after it from the resource's bounded history, or answers an
ERROR event with a 410 Gone ``Status`` if the history no longer reaches back that far. It ends
after ``timeoutSeconds``, when the client goes away, or when the server stops.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from aiohttp import web

from tokenscale_testbed import selectors
from tokenscale_testbed.errors import ApiError, Obj
from tokenscale_testbed.resources import ResourceType
from tokenscale_testbed.store import Resource, Target, served

Event = tuple[str, Obj]  # (type, object): ("ADDED", {...}), ("ERROR", Status)
#: How often an idle watch checks whether its client is still there (seconds).
_IDLE_CHECK = 5.0


@dataclass(eq=False)
class Watcher:
    """A live watch: the store puts matching events on ``queue``; None ends the watch."""

    queue: asyncio.Queue[Event | None]
    match: Callable[[Obj], bool]
    api_version: str


def matcher(target: Target, query: Mapping[str, str]) -> Callable[[Obj], bool]:
    """Whether an object is in the watch: namespace, name, label and field selectors."""
    labels = selectors.label_selector(query.get("labelSelector"))
    fields = selectors.field_selector(query.get("fieldSelector"))

    def match(obj: Obj) -> bool:
        meta = obj["metadata"]
        return ((target.namespace is None or meta.get("namespace") == target.namespace)
                and (target.name is None or meta["name"] == target.name)
                and labels(obj) and fields(obj))
    return match


def initial_events(res: Resource, since: str, match: Callable[[Obj], bool]) -> list[Event]:
    """What a watch from resourceVersion ``since`` sends first: the current objects (``""``,
    ``"0"``), the history after ``since``, or one ERROR event (410 Gone) if that is lost."""
    if since in ("", "0"):
        return [("ADDED", o) for o in res.objects.values() if match(o)]
    try:
        since_rv = int(since)
    except ValueError as e:
        raise ApiError(400, f"invalid resourceVersion {since!r}") from e
    if since_rv < res.dropped_rv:
        return [("ERROR", ApiError(
            410, f"too old resource version: {since_rv} ({res.dropped_rv + 1})",
            reason="Expired").status())]
    return [(k, o) for rv, k, o in res.history if rv > since_rv and match(o)]


def end_watches(resources: Iterable[Resource]) -> None:
    """End every live watch of ``resources`` (at server stop)."""
    for res in resources:
        for watcher in list(res.watchers):
            watcher.queue.put_nowait(None)


async def serve_watch(request: web.BaseRequest, res: Resource,
                      target: Target) -> web.StreamResponse:
    """Stream the events of ``target`` in ``res`` (query: resourceVersion, timeoutSeconds,
    labelSelector, fieldSelector) as newline-separated JSON."""
    rtype, query = target.rtype, request.query
    match = matcher(target, query)
    initial = initial_events(res, query.get("resourceVersion", ""), match)
    watcher = Watcher(asyncio.Queue(), match, rtype.group_version)
    expired = bool(initial) and initial[0][0] == "ERROR"
    if not expired:
        res.watchers.add(watcher)
    timeout = float(query.get("timeoutSeconds", 0) or 0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout > 0 else None
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)
        for kind, obj in initial:
            await _send(response, rtype, kind, obj)
        while not expired:
            wait = _IDLE_CHECK if deadline is None else min(_IDLE_CHECK, deadline - loop.time())
            if wait <= 0:
                break
            try:
                item = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
            except TimeoutError:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                continue
            if item is None:
                break
            await _send(response, rtype, *item)
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        res.watchers.discard(watcher)
    return response


async def _send(response: web.StreamResponse, rtype: ResourceType, kind: str,
                obj: Obj) -> None:
    if kind != "ERROR":
        obj = served(rtype, obj)
    await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
