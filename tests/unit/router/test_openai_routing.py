"""The OpenAI front end's pure decisions: the model and namespace of a ``/v1`` request, the model
list, error bodies, the model name in answers, prompt prefixes, engine load readings, least-loaded
scoring and consistent hashing with bounded loads; plus the route fields that turn them on."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from modelplane.serving.router.activation import ActivationQueue
from modelplane.serving.router.affinity import bounded_choice, choose_endpoint
from modelplane.serving.router.balancing import (
    Backend,
    Endpoint,
    EndpointLoad,
    load_score,
    pick_least_loaded,
)
from modelplane.serving.router.dispatch import Dispatcher, RequestError
from modelplane.serving.router.http_server import rejection_response
from modelplane.serving.router.kube_discovery import build_routes
from modelplane.serving.router.metrics import RouterMetrics
from modelplane.serving.router.openai_api import (
    ModelRewriter,
    OpenAIError,
    error_body,
    is_openai_path,
    model_id,
    model_of,
    models_listing,
    parse_body,
    parse_engine_load,
    parse_openai_path,
    prompt_prefix,
    router_error,
    with_model,
)
from modelplane.serving.router.routes import ModelRoute, RoutesError, RouteTable, parse_static_routes
from modelplane.serving.router.server import apply_routes

# -- the model and the namespace ---------------------------------------------------------------------


def test_the_namespace_comes_from_the_prefix_then_the_header() -> None:
    plain = parse_openai_path("/v1/chat/completions", None)
    assert plain is not None
    assert (plain.namespace, plain.path) == (None, "/v1/chat/completions")
    headed = parse_openai_path("/v1/completions", "team")
    assert headed is not None
    assert headed.namespace == "team"
    prefixed = parse_openai_path("/ns/prod/v1/completions", "team")  # the prefix wins
    assert prefixed is not None
    assert (prefixed.namespace, prefixed.path) == ("prod", "/v1/completions")
    invalid_header = parse_openai_path("/v1/completions", "Not_A_Namespace")
    assert invalid_header is not None
    assert invalid_header.namespace is None
    assert parse_openai_path("/v2/models/iris/infer", None) is None
    assert parse_openai_path("/ns/UPPER/v1/completions", None) is None
    assert parse_openai_path("/v1x", None) is None


def test_openai_paths_are_recognised_raw() -> None:
    assert is_openai_path(b"/v1/completions")
    assert is_openai_path(b"/ns/team/v1/chat/completions")
    assert not is_openai_path(b"/v2/models/iris/infer")


def test_the_model_field_is_required_and_a_string() -> None:
    assert model_of(parse_body(b'{"model": "llama", "prompt": "x"}')) == "llama"
    for body, param, code in (
        (b"", "model", None),
        (b"{nope", None, "invalid_json"),
        (b"[1, 2]", None, "invalid_json"),
        (b'{"prompt": "x"}', "model", None),
        (b'{"model": 3}', "model", None),
        (b'{"model": ""}', "model", None),
    ):
        with pytest.raises(OpenAIError) as refused:
            model_of(parse_body(body))
        assert refused.value.status == 400
        assert (refused.value.param, refused.value.code) == (param, code)


def test_the_backend_gets_its_own_name_for_the_model() -> None:
    payload = parse_body(b'{"model": "llama", "prompt": "hi", "stream": true}')
    assert json.loads(with_model(payload, "llama-3-8b")) == {
        "model": "llama-3-8b",
        "prompt": "hi",
        "stream": True,
    }


def _route(name: str, ready: bool = True, scaled_to_zero: bool = False) -> ModelRoute:
    endpoints = {"1": [Endpoint("e", "http://10.0.0.1:8000", None)]} if ready else {}
    return ModelRoute(name, [Backend("1", 100)], endpoints, scaled_to_zero=scaled_to_zero)


def test_model_ids_resolve_back_to_their_route() -> None:
    assert model_id("default/llama", "default") == "llama"
    assert model_id("team/llama", "default") == "team/llama"
    assert model_id("llama", "default") == "llama"  # a static route's bare key
    routes = {key: _route(key) for key in ("default/llama", "team/mistral", "llama", "phi")}
    table = RouteTable()
    table.replace(routes)
    dispatcher = Dispatcher(table, ActivationQueue(_never), RouterMetrics())
    for key in routes:
        assert dispatcher.lookup(model_id(key, "default"), None).name in (key, "default/llama")
    assert dispatcher.lookup("team/mistral", None).name == "team/mistral"  # no header needed
    assert dispatcher.lookup("mistral", "team").name == "team/mistral"


async def _never(model: str) -> None:
    return None


def test_the_model_list_has_what_is_routable_in_openais_shape() -> None:
    routes = {
        "default/llama": _route("default/llama"),
        "default/cold": _route("default/cold", ready=False, scaled_to_zero=True),
        "default/broken": _route("default/broken", ready=False),
        "team/mistral": _route("team/mistral"),
        "llama": _route("llama"),  # shadowed by default/llama for the id "llama"
    }
    listing = models_listing(routes, "default")
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["cold", "llama", "team/mistral"]
    assert listing["data"][0] == {"id": "cold", "object": "model", "created": 0, "owned_by": "modelplane"}
    assert [m["id"] for m in models_listing(routes, "team")["data"]] == [
        "default/cold",
        "default/llama",
        "llama",
        "mistral",
    ]


# -- refusals ------------------------------------------------------------------------------------------


def test_errors_take_openais_form() -> None:
    body = json.loads(error_body(404, "The model `x` does not exist.", "model", "model_not_found"))
    assert body == {
        "error": {
            "message": "The model `x` does not exist.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    assert json.loads(error_body(503, "down"))["error"]["type"] == "server_error"
    assert json.loads(error_body(429, "full"))["error"]["type"] == "rate_limit_error"
    unknown = router_error(404, "unknown model 'x'")
    assert (unknown.param, unknown.code) == ("model", "model_not_found")
    cold = router_error(503, "no ready endpoint", retry_after=5)
    assert (cold.code, cold.retry_after) == ("model_not_ready", 5)


def test_requests_refused_before_a_handler_use_the_form_of_their_api() -> None:
    openai_413 = rejection_response(b"/v1/completions", 413, "too large")
    assert json.loads(openai_413.body)["error"]["type"] == "invalid_request_error"
    v2_413 = rejection_response(b"/v2/models/iris/infer", 413, "too large")
    assert json.loads(v2_413.body) == {"error": "too large"}


# -- the model name in answers -------------------------------------------------------------------------


def test_answers_carry_the_clients_name_back() -> None:
    rewriter = ModelRewriter("llama-3-8b", "llama")
    assert rewriter.rewrite(b'{"id":"1","model":"llama-3-8b"}') == b'{"id":"1","model":"llama"}'
    assert rewriter.rewrite(b'{"model": "llama-3-8b"}') == b'{"model": "llama"}'
    # Inside a string value the quotes are escaped: generated text is never rewritten.
    text = b'{"model":"llama","text":"\\"model\\":\\"llama-3-8b\\""}'
    assert rewriter.rewrite(text) == text


def test_events_are_rewritten_whole_even_when_split_across_chunks() -> None:
    rewriter = ModelRewriter("served", "team/llm")
    first = rewriter.feed(b'data: {"model":"ser')
    assert first == b""  # an incomplete event waits for its end
    second = rewriter.feed(b'ved","text":"a"}\n\ndata: {"model":"served"')
    assert second == b'data: {"model":"team/llm","text":"a"}\n\n'
    assert rewriter.feed(b"}\n\ndata: [DONE]\n\n") == b'data: {"model":"team/llm"}\n\ndata: [DONE]\n\n'
    assert rewriter.flush() == b""
    crlf = ModelRewriter("served", "llm")
    assert crlf.feed(b'data: {"model":"served"}\r\n\r\ndata: {"mo') == b'data: {"model":"llm"}\r\n\r\n'
    assert crlf.flush() == b'data: {"mo'


# -- prompt prefixes -----------------------------------------------------------------------------------


def test_the_prefix_is_the_prompt_or_the_system_prompt_and_first_user_message() -> None:
    assert prompt_prefix({"prompt": "abcdef"}, 4) == "abcd"
    assert prompt_prefix({"prompt": ["first", "second"]}, 10) == "first"
    assert prompt_prefix({"prompt": [1, 2, 3, 4, 5]}, 8) == "1,2"
    chat: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url"}]},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "later turns do not count"},
        ]
    }
    assert prompt_prefix(chat, 100) == "Be brief.\nHi"
    assert prompt_prefix({"messages": [{"role": "user", "content": "only"}]}, 100) == "only"
    assert prompt_prefix({"model": "x"}, 100) is None


# -- engine load ---------------------------------------------------------------------------------------


def test_the_engine_load_is_read_from_its_metrics_page() -> None:
    text = (
        "# HELP vllm:num_requests_waiting Requests waiting\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="llama"} 3.0\n'
        'vllm:num_requests_running{model_name="llama"} 7.0 1700000000000\n'
        'vllm:kv_cache_usage_perc{model_name="llama"} 0.42\n'
        "vllm:prompt_tokens_total 100\n"
    )
    assert parse_engine_load(text) == (3.0, 7.0, 0.42)
    assert parse_engine_load("process_cpu_seconds_total 1.0\n") is None


# -- least-loaded scoring ------------------------------------------------------------------------------


def _endpoint(key: str, outstanding: int = 0, load: EndpointLoad | None = None) -> Endpoint:
    return Endpoint(key, f"http://{key}:8000", None, outstanding=outstanding, load=load)


def test_the_score_orders_by_waiting_then_requests_at_the_engine_then_kv_cache() -> None:
    now = 100.0
    queued = _endpoint("q", load=EndpointLoad(waiting=2, running=4, kv_cache=0.1, at=now, outstanding=0))
    busy = _endpoint("b", load=EndpointLoad(waiting=0, running=30, kv_cache=0.9, at=now, outstanding=0))
    idle = _endpoint("i", load=EndpointLoad(waiting=0, running=30, kv_cache=0.2, at=now, outstanding=0))
    assert load_score(queued, now) == (2.0, 6.0, 0.1)
    assert sorted([queued, busy, idle], key=lambda e: load_score(e, now)) == [idle, busy, queued]


def test_requests_sent_since_the_reading_count_at_once() -> None:
    now = 100.0
    reading = EndpointLoad(waiting=1, running=8, kv_cache=0.5, at=now - 0.5, outstanding=2)
    # Three more in flight from this router since the reading: the queue grew by three.
    assert load_score(_endpoint("e", outstanding=5, load=reading), now) == (4.0, 12.0, 0.5)
    # Two of ours finished since: the queue shrank.
    assert load_score(_endpoint("e", outstanding=0, load=reading), now) == (0.0, 7.0, 0.5)
    # No queue at the reading: new requests are taken to run, not to wait.
    no_queue = EndpointLoad(waiting=0, running=3, kv_cache=0.5, at=now, outstanding=0)
    assert load_score(_endpoint("e", outstanding=4, load=no_queue), now) == (0.0, 7.0, 0.5)


def test_stale_or_missing_readings_fall_back_to_requests_in_flight() -> None:
    now = 100.0
    stale = EndpointLoad(waiting=50, running=50, kv_cache=1.0, at=now - 10, outstanding=0)
    assert load_score(_endpoint("s", outstanding=3, load=stale), now) == (0.0, 3.0, 0.0)
    assert load_score(_endpoint("n", outstanding=1), now) == (0.0, 1.0, 0.0)


def test_least_loaded_takes_the_shorter_queue_and_shares_among_equals() -> None:
    now = 100.0
    long_queue = _endpoint("long", load=EndpointLoad(5, 2, 0.3, now, 0))
    short_queue = _endpoint("short", load=EndpointLoad(0, 2, 0.3, now, 0))
    rng = random.Random(1)
    assert {pick_least_loaded([long_queue, short_queue], rng, now).key for _ in range(20)} == {"short"}  # type: ignore[union-attr]
    equals = [_endpoint(k) for k in "abc"]
    assert {pick_least_loaded(equals, rng, now).key for _ in range(60)} == {"a", "b", "c"}  # type: ignore[union-attr]
    assert pick_least_loaded([long_queue, short_queue], rng, now, exclude={"short"}) is long_queue
    assert pick_least_loaded([long_queue], rng, now, exclude={"long"}) is None


# -- consistent hashing with bounded loads -------------------------------------------------------------

KEYS = [f"10.0.0.{i}:8000" for i in range(1, 6)]
PREFIXES = [f"system prompt {i}" for i in range(2000)]


def test_a_prefix_always_goes_to_the_same_endpoint() -> None:
    loads = [0.0] * len(KEYS)
    first = [bounded_choice(p, KEYS, loads) for p in PREFIXES]
    assert first == [bounded_choice(p, KEYS, loads) for p in PREFIXES]
    shares = [first.count(i) / len(PREFIXES) for i in range(len(KEYS))]
    assert all(0.1 < share < 0.3 for share in shares), shares  # about a fifth each


def test_an_endpoint_over_the_load_bound_is_skipped() -> None:
    prefix = PREFIXES[0]
    owner = bounded_choice(prefix, KEYS, [0.0] * len(KEYS))
    assert owner is not None
    loads = [1.0] * len(KEYS)
    loads[owner] = 10.0  # bound: ceil(1.25 * (14 + 1) / 5) = 4
    spilled = bounded_choice(prefix, KEYS, loads)
    assert spilled is not None
    assert spilled != owner
    assert bounded_choice(prefix, KEYS, loads, skip={spilled}) not in (owner, spilled)
    assert bounded_choice(prefix, KEYS, loads, skip=set(range(len(KEYS)))) is None


def test_a_hot_prefix_never_loads_an_endpoint_past_the_bound() -> None:
    loads = [0.0] * len(KEYS)
    for _ in range(100):  # 100 concurrent requests, all with the same prefix
        capacity = -(-1.25 * (sum(loads) + 1) // len(KEYS))
        chosen = bounded_choice("the one hot system prompt", KEYS, loads)
        assert chosen is not None
        loads[chosen] += 1
        assert max(loads) <= capacity
    assert max(loads) <= 1.25 * 100 / len(KEYS) + 1


def test_an_endpoint_leaving_moves_only_the_prefixes_it_held() -> None:
    zero = [0.0] * len(KEYS)
    before = {p: KEYS[i] for p in PREFIXES if (i := bounded_choice(p, KEYS, zero)) is not None}
    remaining = KEYS[:2] + KEYS[3:]  # the third endpoint goes away
    after = {p: remaining[i] for p in PREFIXES if (i := bounded_choice(p, remaining, zero[:4])) is not None}
    moved = [p for p in PREFIXES if before[p] != after[p]]
    assert all(before[p] == KEYS[2] for p in moved)  # only its own prefixes moved
    assert len(moved) / len(PREFIXES) < 0.3  # about a fifth: its share


def test_choosing_an_endpoint_by_affinity_or_by_load() -> None:
    now = 100.0
    endpoints = [_endpoint(key) for key in KEYS]
    rng = random.Random(3)
    owner = choose_endpoint(endpoints, rng, now, prefix="shared prefix")
    assert owner is not None
    assert all(choose_endpoint(endpoints, rng, now, prefix="shared prefix") is owner for _ in range(10))
    elsewhere = choose_endpoint(endpoints, rng, now, exclude={owner.key}, prefix="shared prefix")
    assert elsewhere is not None
    assert elsewhere is not owner
    owner.ejected_until = now + 10  # ejected: skipped like an excluded one
    assert choose_endpoint(endpoints, rng, now, prefix="shared prefix") is not owner
    loaded = [
        _endpoint("a", load=EndpointLoad(3, 1, 0, now, 0)),
        _endpoint("b", load=EndpointLoad(0, 1, 0, now, 0)),
    ]
    assert choose_endpoint(loaded, rng, now) is loaded[1]  # no prefix: least loaded


# -- dispatch with a picker, scale from zero ------------------------------------------------------------


async def test_a_picked_dispatch_waits_for_activation_and_retries_elsewhere() -> None:
    table = RouteTable()
    queue = ActivationQueue(_never, max_waiting=10, timeout_s=5)
    apply = apply_routes(table, queue)
    apply({"ns/llm": ModelRoute("ns/llm", [Backend("1", 100)], {}, scaled_to_zero=True, generative=True)})
    dispatcher = Dispatcher(table, queue, RouterMetrics())
    picked: list[set[str]] = []
    sent: list[str] = []

    def pick(route: ModelRoute, endpoints: list[Endpoint], now: float, tried: set[str]) -> Endpoint | None:
        picked.append(set(tried))
        return next((e for e in endpoints if e.key not in tried), None)

    async def call(route: ModelRoute, endpoint: Endpoint, version: str) -> int:
        sent.append(endpoint.key)
        return 503 if endpoint.key == "a" else 200

    request = asyncio.create_task(
        dispatcher.dispatch_picking("llm", "ns", None, pick, call, lambda r: r == 503, lambda r: r >= 500)
    )
    await asyncio.sleep(0.05)
    assert not request.done()  # held: the model is scaled to zero
    endpoints = [_endpoint("a"), _endpoint("b")]
    apply({"ns/llm": ModelRoute("ns/llm", [Backend("1", 100)], {"1": endpoints}, scaled_to_zero=True)})
    done = await asyncio.wait_for(request, timeout=2)
    assert done.result == 200
    assert sent == ["a", "b"]  # "a" answered 503: retried on "b"
    assert picked == [set(), {"a"}]
    with pytest.raises(RequestError) as unknown:
        await dispatcher.dispatch_picking("nope", "ns", None, pick, call, lambda r: False, lambda r: False)
    assert unknown.value.status == 404


# -- route fields --------------------------------------------------------------------------------------


def test_static_routes_mark_generative_models_and_prefix_affinity() -> None:
    routes = parse_static_routes(
        {
            "models": {
                "llm": {
                    "generative": True,
                    "prefixAffinity": True,
                    "backendModel": "llama-3-8b",
                    "endpoints": [{"http": "http://127.0.0.1:8000"}, {"http": "http://127.0.0.1:8001"}],
                },
                "iris": [{"http": "http://127.0.0.1:9000"}],
            }
        }
    )
    llm, iris = routes["llm"], routes["iris"]
    assert (llm.generative, llm.prefix_affinity, llm.backend_model) == (True, True, "llama-3-8b")
    assert len(llm.endpoints["1"]) == 2
    assert (iris.generative, iris.prefix_affinity, iris.backend_model) == (False, False, None)
    bad_models: list[dict[str, Any]] = [
        {"generative": "yes", "endpoints": [{"http": "http://127.0.0.1:8000"}]},
        {"endpoints": [{"http": "http://127.0.0.1:8000"}], "prefix_affinity": True},
        {"endpoints": []},
    ]
    for bad in bad_models:
        with pytest.raises(RoutesError):
            parse_static_routes({"models": {"llm": bad}})


def test_kubernetes_routes_are_generative_by_pod_label_with_affinity_by_annotation() -> None:
    def objects(api_label: bool, annotate: bool) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        labels = {"modelplane.io/deployment": "llm", "modelplane.io/role": "stable"}
        if api_label:
            labels["modelplane.io/api"] = "openai"
        metadata: dict[str, Any] = {"name": "llm", "namespace": "team"}
        if annotate:
            metadata["annotations"] = {"modelplane.io/prefix-affinity": "true"}
        deployments = {
            "team/llm": {"metadata": metadata, "spec": {"model": {"name": "llama-3-8b", "version": 1}}}
        }
        pods = {"team/p": {"metadata": {"name": "p", "namespace": "team", "labels": labels}}}
        slices = {
            "s": {
                "metadata": {"name": "s", "namespace": "team", "labels": {"modelplane.io/deployment": "llm"}},
                "ports": [{"name": "http", "port": 8000}],
                "endpoints": [
                    {"addresses": ["10.0.0.1"], "conditions": {"ready": True}, "targetRef": {"name": "p"}}
                ],
            }
        }
        return deployments, slices, pods

    marked = build_routes(*objects(api_label=True, annotate=True))["team/llm"]
    assert (marked.generative, marked.prefix_affinity, marked.backend_model) == (True, True, "llama-3-8b")
    plain = build_routes(*objects(api_label=False, annotate=False))["team/llm"]
    assert (plain.generative, plain.prefix_affinity) == (False, False)
