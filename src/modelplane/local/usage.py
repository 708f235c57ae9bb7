"""What ``modelplane up`` prints for a newcomer to copy: for ``demo``, a curl command and a tritonclient
snippet; for ``demo-chat``, a streamed curl command and an ``openai`` client snippet."""

from __future__ import annotations

import json
import shlex

from modelplane.local.demo import DEMO_NAME, SAMPLE_INPUT
from modelplane.local.demo_chat import DEMO_CHAT_NAME, SAMPLE_PROMPT


def infer_url(http_port: int, model: str = DEMO_NAME, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{http_port}/v2/models/{model}/infer"


def sample_body() -> dict[str, object]:
    return {"inputs": [{"name": "INPUT__0", "shape": [1, 4], "datatype": "FP32", "data": list(SAMPLE_INPUT)}]}


def curl_command(http_port: int) -> str:
    body = json.dumps(sample_body())
    return f"curl -s {infer_url(http_port)} -H 'Content-Type: application/json' -d {shlex.quote(body)}"


def tritonclient_snippet(http_port: int, grpc_port: int) -> str:
    values = ", ".join(str(v) for v in SAMPLE_INPUT)
    return f"""\
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

data = np.array([[{values}]], dtype=np.float32)
for module, url in ((httpclient, "127.0.0.1:{http_port}"), (grpcclient, "127.0.0.1:{grpc_port}")):
    client = module.InferenceServerClient(url)
    inputs = [module.InferInput("INPUT__0", list(data.shape), "FP32")]
    inputs[0].set_data_from_numpy(data)
    result = client.infer("{DEMO_NAME}", inputs)
    print(module.__name__, result.as_numpy("OUTPUT__0").round(3).tolist())
"""


def chat_url(http_port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{http_port}/v1/chat/completions"


def chat_body() -> dict[str, object]:
    """A greedy (so repeatable) streamed chat request to ``demo-chat``."""
    return {
        "model": DEMO_CHAT_NAME,
        "messages": [{"role": "user", "content": SAMPLE_PROMPT}],
        "max_tokens": 48,
        "temperature": 0,
        "stream": True,
    }


def chat_curl_command(http_port: int) -> str:
    body = json.dumps(chat_body())
    return f"curl -N {chat_url(http_port)} -H 'Content-Type: application/json' -d {shlex.quote(body)}"


def openai_snippet(http_port: int) -> str:
    return f"""\
from openai import OpenAI

# The local router checks no API key; the client insists on one, any text does.
client = OpenAI(base_url="http://127.0.0.1:{http_port}/v1", api_key="unused")
stream = client.chat.completions.create(
    model="{DEMO_CHAT_NAME}",
    messages=[{{"role": "user", "content": "{SAMPLE_PROMPT}"}}],
    max_tokens=48,
    temperature=0,
    stream=True,
)
for chunk in stream:
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
"""
