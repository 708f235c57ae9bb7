"""The OpenAI API as the router sees it: which model a ``/v1`` request is for, and the answers it
gives itself. Pure functions over bytes and the route table (no I/O), so every rule is unit-tested.

The scheme, documented for users (see ``serving/router/README.md``):

- ``POST /v1/...`` with a JSON body whose ``model`` names the route: ``NAME`` in the selected
  namespace (the router's default one unless ``/ns/NAMESPACE/v1/...`` or the header
  ``X-Modelplane-Namespace`` picks another; the prefix wins), or ``NAMESPACE/NAME`` explicitly;
- ``GET /v1/models`` lists what is routable (ready, or scaled to zero and so woken on demand) with
  each model's id as a client addresses it from the selected namespace (:func:`model_id`);
- refusals use OpenAI's form ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from modelplane.serving.router.routes import ModelRoute

_NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_NS_PREFIX = re.compile(r"^/ns/(?P<ns>[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(?P<rest>/v1(?:/.*)?)$")
MAX_MODEL_CHARS = 253  # a namespace, a slash and a model name fit
MAX_PARTIAL_EVENT = 1024 * 1024  # an event held for its end beyond this is sent on unrewritten

#: OpenAI's error ``type`` by status, as the runtime's own OpenAI routes render them.
_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class OpenAIPath:
    """A ``/v1`` request's namespace (None: the router's default) and its path on the backend."""

    __slots__ = ("namespace", "path")

    def __init__(self, namespace: str | None, path: str) -> None:
        self.namespace = namespace
        self.path = path  # "/v1/...", without a namespace prefix


def parse_openai_path(path: str, namespace_header: str | None) -> OpenAIPath | None:
    """The namespace and backend path of an OpenAI API path, or None if the path is not one."""
    if path == "/v1" or path.startswith("/v1/"):
        namespace = namespace_header if namespace_header and _NAMESPACE.match(namespace_header) else None
        return OpenAIPath(namespace, path)
    if not path.startswith("/ns/"):
        return None
    match = _NS_PREFIX.match(path)
    if match is None:
        return None
    return OpenAIPath(match.group("ns"), match.group("rest"))


def is_openai_path(path: bytes) -> bool:
    """Whether a raw request path is an OpenAI API one (its refusals then take OpenAI's form)."""
    if path.startswith(b"/v1/") or path == b"/v1":
        return True
    return path.startswith(b"/ns/") and b"/v1/" in path


class OpenAIError(Exception):
    """A request the router refuses itself, in OpenAI's terms."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> bytes:
    """OpenAI's error form: ``{"error": {"message", "type", "param", "code"}}``."""
    error = {"message": message, "type": error_type(status), "param": param, "code": code}
    return json.dumps({"error": error}).encode()


#: The code a refusal carries when the router, not the backend, answers (by status).
_ROUTER_CODES = {
    404: "model_not_found",
    413: "request_too_large",
    429: "queue_full",
    502: "upstream_error",
    503: "model_not_ready",
    504: "upstream_timeout",
}


def router_error(status: int, message: str, retry_after: int | None = None) -> OpenAIError:
    """A refusal from the router's dispatch (unknown model, none ready, ...), in OpenAI's terms."""
    param = "model" if status == 404 else None
    return OpenAIError(status, message, param, _ROUTER_CODES.get(status), retry_after)


def parse_body(body: bytes) -> dict[str, Any]:
    """The request's JSON object; 400 when the body is missing, not JSON, or not an object."""
    if not body:
        raise OpenAIError(400, "the request needs a JSON body with a `model`", param="model")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise OpenAIError(400, "the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise OpenAIError(400, "the request body must be a JSON object", code="invalid_json")
    return payload


def model_of(payload: Mapping[str, Any]) -> str:
    """The ``model`` the request names; 400 when it names none."""
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError(400, "you must provide a model parameter (a string)", param="model")
    if len(model) > MAX_MODEL_CHARS:
        raise OpenAIError(400, f"`model` is longer than {MAX_MODEL_CHARS} characters", param="model")
    return model


def with_model(payload: dict[str, Any], model: str) -> bytes:
    """The request body with ``model`` replaced (the name the backend serves the model under)."""
    payload["model"] = model
    return json.dumps(payload, separators=(",", ":")).encode()


# -- the model list ---------------------------------------------------------------------------------


def model_id(key: str, namespace: str) -> str:
    """The id a client uses for the route ``key`` from ``namespace``: the bare name for routes of
    that namespace (and bare static keys), ``NAMESPACE/NAME`` for routes of other namespaces. Both
    resolve back to the route (see :func:`modelplane.serving.router.paths.route_keys`)."""
    owner, slash, name = key.partition("/")
    if slash and owner == namespace:
        return name
    return key


def models_listing(routes: Mapping[str, ModelRoute], namespace: str) -> dict[str, Any]:
    """``GET /v1/models``: the routable models (ready or scaled to zero), in OpenAI's list shape.

    Ids are as :func:`model_id` gives them from ``namespace``; when two routes would share an id (a
    bare static key and a route of the namespace with the same name), the one a request for that
    id reaches is listed (the namespaced one, as lookup tries it first).
    """
    chosen: dict[str, str] = {}
    for key, route in routes.items():
        if not (route.ready() or route.scaled_to_zero):
            continue
        model = model_id(key, namespace)
        if model not in chosen or "/" in key:
            chosen[model] = key
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": "modelplane"} for model in sorted(chosen)
    ]
    return {"object": "list", "data": data}


def model_card(routes: Mapping[str, ModelRoute], namespace: str, model: str) -> dict[str, Any] | None:
    """``GET /v1/models/MODEL``: one entry of the list, or None when it is not listed."""
    for entry in models_listing(routes, namespace)["data"]:
        if entry["id"] == model:
            card: dict[str, Any] = entry
            return card
    return None


# -- the model name in answers ----------------------------------------------------------------------


class ModelRewriter:
    """Puts the client's model name back into answers that carry the backend's.

    The runtime answers ``"model":"<served name>"`` (compact JSON; a spaced ``"model": "..."`` is
    handled too). The pattern cannot occur inside a string value, where quotes are escaped, so a
    byte replacement is exact. Server-sent events are rewritten whole: :meth:`feed` returns the
    complete events received so far (each sent on at once) and keeps a partial one for the next
    chunk; :meth:`flush` returns what is left at the end.
    """

    __slots__ = ("_partial", "_patterns")

    def __init__(self, backend_model: str, client_model: str) -> None:
        ours, theirs = json.dumps(client_model).encode(), json.dumps(backend_model).encode()
        self._patterns = [
            (b'"model":' + theirs, b'"model":' + ours),
            (b'"model": ' + theirs, b'"model": ' + ours),
        ]
        self._partial = b""

    def rewrite(self, data: bytes) -> bytes:
        for old, new in self._patterns:
            if old in data:
                data = data.replace(old, new)
        return data

    def feed(self, chunk: bytes) -> bytes:
        data = self._partial + chunk if self._partial else chunk
        cut = 0  # just past the last event's end (a blank line, in any of SSE's line endings)
        for separator in (b"\n\n", b"\r\n\r\n", b"\r\r"):
            at = data.rfind(separator)
            if at >= 0:
                cut = max(cut, at + len(separator))
        if cut == 0 and len(data) <= MAX_PARTIAL_EVENT:
            self._partial = data
            return b""
        if cut == 0:  # no event end in sight: send it on as it is rather than hold it
            cut = len(data)
        self._partial = data[cut:]
        return self.rewrite(data[:cut])

    def flush(self) -> bytes:
        rest, self._partial = self._partial, b""
        return self.rewrite(rest)


# -- prefix affinity --------------------------------------------------------------------------------


def _text(content: Any) -> str:
    """A chat message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def prompt_prefix(payload: Mapping[str, Any], chars: int) -> str | None:
    """The first ``chars`` characters of what the backend's prefix cache would share: a completion's
    prompt, or a chat's system prompt and first user message. None when there is no text."""
    prompt = payload.get("prompt")
    text = ""
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, list) and prompt:
        first = prompt[0]
        if isinstance(first, str):
            text = first
        elif isinstance(first, int):  # a prompt of token ids: about four characters per token
            text = ",".join(str(t) for t in prompt[: max(1, chars // 4)])
        elif isinstance(first, list):  # a batch of token-id prompts: the first one
            text = ",".join(str(t) for t in first[: max(1, chars // 4)])
    else:
        messages = payload.get("messages")
        if isinstance(messages, list):
            system, user = "", ""
            for message in messages:
                if not isinstance(message, dict):
                    continue
                role = message.get("role")
                if role in ("system", "developer") and not system:
                    system = _text(message.get("content"))
                elif role == "user":
                    user = _text(message.get("content"))
                    break
            text = system + "\n" + user if system else user
    return text[:chars] if text else None


# -- the backends' load -----------------------------------------------------------------------------

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_CACHE = "vllm:kv_cache_usage_perc"


def parse_engine_load(text: str) -> tuple[float, float, float] | None:
    """Waiting requests, running requests and KV-cache use (0..1) from a runtime's ``/metrics``
    (Prometheus text): summed over the samples of each gauge (KV-cache: the largest); None when the
    page has no waiting-queue gauge (not a generative runtime)."""
    waiting = running = kv = 0.0
    seen = False
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name, brace, rest = line.partition("{")
        if brace:
            rest = rest.rpartition("}")[2]
        else:
            name, _, rest = line.partition(" ")
        fields = rest.split()  # the value, then an optional timestamp
        try:
            number = float(fields[0])
        except (IndexError, ValueError):
            continue
        name = name.strip()
        if number != number:  # NaN
            continue
        if name == WAITING:
            waiting += number
            seen = True
        elif name == RUNNING:
            running += number
        elif name == KV_CACHE:
            kv = max(kv, number)
    return (waiting, running, min(max(kv, 0.0), 1.0)) if seen else None
