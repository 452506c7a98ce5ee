"""The reviewer page, `/review`: sign in with a reviewer key, pick a queue, label its items from the keyboard.

The page is server-rendered (the queue's instructions and the project's labels); `review.js` claims items, shows each
trace as text, and sends labels and skips to `/review/api/...`, the API's own steps (`gateway/routes/queues.py`)
authorized by the page's session cookie (HttpOnly, SameSite=Strict, path `/review`) and the request's Origin.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.core import Gateway
from gateway.errors import HTTPProblem
from gateway.pages.routes import CSP, SignIn, page_response, same_origin
from gateway.pages.session import Principal
from gateway.review.fill import spec_of
from gateway.routes.queues import Caller, claim_as, label_as, skip_as

PAGE = "/review"
API = f"{PAGE}/api"
# The dashboard's policy, and the page's script may call the page's own API.
HEADERS = {"Content-Security-Policy": CSP + "; connect-src 'self'"}


def review_routes(gateway: Gateway) -> list[BaseRoute]:
    """Routes for `/review`, its sign-in and sign-out, and the page's API. The pages' static files are the
    dashboard's (`gateway/routes/dashboard.py` mounts them)."""

    async def authenticate(key: str) -> Principal | None:
        reviewer = await gateway.store.review.reviewer_by_key(key)
        if reviewer is None or reviewer.revoked_at is not None:
            return None
        return Principal("reviewer", reviewer.project_id, reviewer.id)

    async def is_live(principal: Principal) -> bool:
        reviewer = await gateway.store.review.reviewer_by_id(principal.key_id)
        return reviewer is not None and reviewer.revoked_at is None and reviewer.project_id == principal.project_id

    sign_in = SignIn(PAGE, "Review", "reviewer", "Reviewer key", "rk_", authenticate, is_live,
                     lambda: gateway.page_key, gateway.limiter, lambda request: gateway.client_key(request.scope))

    async def caller(request: Request) -> Caller | None:
        principal = await sign_in.principal(request)
        if principal is None:
            return None
        reviewer = await gateway.store.review.reviewer_by_id(principal.key_id)
        project = await gateway.store.project_by_id(principal.project_id)
        return None if reviewer is None or project is None else Caller(project, reviewer.name)

    async def page(request: Request) -> Response:
        who = await caller(request)
        if who is None:
            return sign_in.signed_out(request)
        frame = {"page_title": "Review", "sign_out_action": f"{PAGE}/sign-out",
                 "signed_in_as": f"Reviewer {who.reviewer}"}
        queues = await gateway.store.review.queues_of(who.project.id)
        chosen = request.query_params.get("queue")
        if chosen is None:
            return page_response("review.html", queue=None, queues=[(q.id, spec_of(q)) for q in queues], **frame)
        queue = next((q for q in queues if q.id == chosen), None)
        if queue is None:
            return page_response("message.html", 404, heading="No such queue",
                                 message="This project has no queue with that id.", back=PAGE, **frame)
        return page_response("review.html", headers=HEADERS, queue=queue, spec=spec_of(queue),
                             api=f"{API}/queues/{queue.id}",
                             labels=await gateway.store.review.labels_of(who.project.id), queues=[], **frame)

    def api(step: Callable[[Request, Caller], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not same_origin(request):
                raise HTTPProblem("forbidden", "send this from the reviewer page itself (its Origin did not match)")
            who = await caller(request)
            if who is None:
                raise HTTPProblem("unauthorized", "sign in to the reviewer page again")
            return await step(request, who)
        return endpoint

    items = f"{API}/queues/{{queue_id}}/items/{{item_id:int}}"
    return [
        Route(PAGE, page, methods=["GET"]),
        Route(f"{PAGE}/sign-in", sign_in.sign_in, methods=["POST"]),
        Route(f"{PAGE}/sign-out", sign_in.sign_out, methods=["POST"]),
        Route(f"{API}/queues/{{queue_id}}/claim", api(claim_as), methods=["POST"]),
        Route(f"{items}/label", api(label_as), methods=["POST"]),
        Route(f"{items}/skip", api(skip_as), methods=["POST"]),
    ]
