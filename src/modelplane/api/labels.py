"""Labels on the objects the operator creates, which the router and the autoscaler select on."""

from __future__ import annotations

from typing import Literal

#: The ModelDeployment a child (Deployment, pod, Service, EndpointSlice) belongs to.
DEPLOYMENT_LABEL = "modelplane.io/deployment"
#: Which traffic role a serving pod plays: one of :data:`Role`.
ROLE_LABEL = "modelplane.io/role"
#: The registry version a serving pod runs (absent for a direct ``storageUri``).
VERSION_LABEL = "modelplane.io/model-version"

Role = Literal["stable", "canary", "shadow"]
