"""`/v1/destinations`: where a project's signals are forwarded (secret key). Credentials go in once and never come out."""

from __future__ import annotations

import time

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.body import read_json
from gateway.core import Gateway, gateway_of
from gateway.errors import HTTPProblem
from gateway.forwarding import destinations as config
from gateway.forwarding.crypto import CredentialsError
from gateway.routes import json_response
from gateway.store import Project
from gateway.store.outbox import StoredDestination

MAX_DESTINATION_BYTES = 16 * 1024


class Requeued(msgspec.Struct):
    requeued: int


async def _stored(gateway: Gateway, project: Project, request: Request) -> StoredDestination:
    found = await gateway.store.outbox.destination(project.id, request.path_params["destination_id"])
    if found is None:
        raise HTTPProblem("not_found", "no such destination in this project")
    return found


async def _shown(gateway: Gateway, stored: StoredDestination) -> config.DestinationOut:
    counts = await gateway.store.outbox.counts(stored.id)
    if counts is None:  # removed meanwhile
        raise HTTPProblem("not_found", "no such destination in this project")
    worker = gateway.forwarder
    in_flight = worker.in_flight.get(stored.id, 0) if worker.leading else None
    return config.shown(stored, counts, in_flight, int(time.time() * 1000))


async def create_destination(request: Request) -> Response:
    gateway = gateway_of(request)
    project, _ = await gateway.directory.server_auth(request)
    body = await read_json(request, MAX_DESTINATION_BYTES)
    try:
        new = config.decode_new(body)
        url = config.check_url(new.url)
        signals = config.signals_of(new)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise HTTPProblem("malformed", f"body is not a valid destination: {exc}") from None
    vault = gateway.vault
    if vault is None:
        raise HTTPProblem("not_configured", "set BACKCHANNEL_ENCRYPTION_KEY on the gateway: destination credentials "
                                            "are stored encrypted with it")
    if len(await gateway.store.outbox.destinations(project.id)) >= config.MAX_PER_PROJECT:
        raise HTTPProblem("limit_reached", f"a project has at most {config.MAX_PER_PROJECT} destinations")
    credentials, secret = config.credentials_of(new)
    kind = config.kind_of(new)
    destination_id = await gateway.store.outbox.add(project.id, kind, url, signals, vault.seal(credentials))
    gateway.forwarder.wake()  # the first destination starts the delivery process
    return json_response(config.DestinationCreated(destination_id, kind, url, list(signals), secret), 201)


async def list_destinations(request: Request) -> Response:
    gateway = gateway_of(request)
    project, _ = await gateway.directory.server_auth(request)
    stored = await gateway.store.outbox.destinations(project.id)
    return json_response(config.DestinationList([await _shown(gateway, d) for d in stored]))


async def get_destination(request: Request) -> Response:
    gateway = gateway_of(request)
    project, _ = await gateway.directory.server_auth(request)
    stored = await _stored(gateway, project, request)
    shown = await _shown(gateway, stored)
    shown.recent_dead = [config.DeadRecord(**r) for r in await gateway.store.outbox.dead_records(stored.id)]
    return json_response(shown)


async def delete_destination(request: Request) -> Response:
    gateway = gateway_of(request)
    project, _ = await gateway.directory.server_auth(request)
    if not await gateway.store.outbox.remove(project.id, request.path_params["destination_id"]):
        raise HTTPProblem("not_found", "no such destination in this project")
    return Response(status_code=204)


async def retry_dead(request: Request) -> Response:
    gateway = gateway_of(request)
    project, _ = await gateway.directory.server_auth(request)
    requeued = await gateway.store.outbox.retry_dead(project.id, request.path_params["destination_id"])
    if requeued < 0:
        raise HTTPProblem("not_found", "no such destination in this project")
    gateway.forwarder.wake()
    return json_response(Requeued(requeued))


async def test_destination(request: Request) -> Response:
    """Send one marked test record now, past the outbox, and answer what the destination said."""
    gateway = gateway_of(request)
    project, _ = await gateway.directory.server_auth(request)
    stored = await _stored(gateway, project, request)
    try:
        if gateway.vault is None:
            raise CredentialsError("set BACKCHANNEL_ENCRYPTION_KEY on the gateway")
        credentials = gateway.vault.open(stored.credentials)
    except CredentialsError as exc:  # sealed under another key than the gateway's
        raise HTTPProblem("not_configured", str(exc)) from None
    return json_response(await config.send_test(stored, credentials, gateway.settings.forward_timeout_ms / 1000))


routes = [
    Route("/v1/destinations", create_destination, methods=["POST"]),
    Route("/v1/destinations", list_destinations, methods=["GET"]),
    Route("/v1/destinations/{destination_id}", get_destination, methods=["GET"]),
    Route("/v1/destinations/{destination_id}", delete_destination, methods=["DELETE"]),
    Route("/v1/destinations/{destination_id}/test", test_destination, methods=["POST"]),
    Route("/v1/destinations/{destination_id}/retry-dead", retry_dead, methods=["POST"]),
]
