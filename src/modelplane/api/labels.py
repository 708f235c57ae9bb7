"""Labels on the objects the operator creates, which the router and the autoscaler select on."""

from __future__ import annotations

from typing import Literal

#: The ModelDeployment a child (Deployment, pod, Service, EndpointSlice) belongs to.
DEPLOYMENT_LABEL = "modelplane.io/deployment"
#: Which traffic role a serving pod plays: one of :data:`Role`.
ROLE_LABEL = "modelplane.io/role"
#: The registry version a serving pod runs (absent for a direct ``storageUri``).
VERSION_LABEL = "modelplane.io/model-version"

#: The API a serving pod speaks, where it is not the V2 protocol: ``openai`` for causal language
#: models (the generative engine or vLLM), so the router routes ``/v1/*`` to it.
API_LABEL = "modelplane.io/api"
API_OPENAI = "openai"

Role = Literal["stable", "canary", "shadow"]
