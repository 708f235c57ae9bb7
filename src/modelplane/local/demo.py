"""The demo model of the local stack: trained from code on first run, registered, deployed as ``demo``.

A small classifier learns three Gaussian blobs in four dimensions (a few seconds on one CPU core),
is saved as TorchScript and registered with its tensor signature, its held-out accuracy and its
training parameters, so it goes through exactly the path a team's model takes. The sample request
printed by ``modelplane up`` sits near the centre of class 2, so the answer is easy to check.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from modelplane.registry_client.client import RegistryClient, RegistryClientError

DEMO_NAME = "demo"
DEMO_ALIAS = "production"
CENTERS = ((0.0, 0.0, 0.0, 0.0), (3.0, 3.0, 0.0, 0.0), (0.0, 0.0, 3.0, 3.0))
SAMPLE_INPUT = (0.1, -0.2, 3.1, 2.9)  # near CENTERS[2]
SAMPLE_CLASS = 2
SIGNATURE = {
    "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 3]}],
}
DEMO_DEPLOYMENT = f"""\
# The demo model, created by `modelplane up` on first run. Edit or delete this file: the local
# stack applies the change within a couple of seconds. The same file works with `kubectl apply`.
apiVersion: modelplane.io/v1alpha1
kind: ModelDeployment
metadata:
  name: {DEMO_NAME}
spec:
  model:
    name: {DEMO_NAME}
    alias: {DEMO_ALIAS}
  resources:
    gpu:
      count: 0
  autoscaling:
    minReplicas: 1
    maxReplicas: 2
  batching:
    maxBatchSize: 32
    maxLatencyMs: 2
"""


@dataclass(frozen=True)
class TrainedDemo:
    path: Path
    accuracy: float
    loss: float
    params: dict[str, str]


def train(out: Path, seed: int = 0, epochs: int = 60) -> TrainedDemo:
    """Train the classifier on generated blobs and save it as TorchScript at ``out``."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    centers = torch.tensor(CENTERS)

    def blobs(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(len(CENTERS)).repeat_interleave(per_class)
        points = centers[labels] + 0.7 * torch.randn(len(labels), 4, generator=generator)
        return points, labels

    x_train, y_train = blobs(300)
    x_test, y_test = blobs(100)
    torch.manual_seed(seed)
    hidden = 16
    model = torch.nn.Sequential(
        torch.nn.Linear(4, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, len(CENTERS)),
        torch.nn.Softmax(-1),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    loss_fn = torch.nn.NLLLoss()
    loss = torch.tensor(math.inf)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = loss_fn(torch.log(model(x_train) + 1e-9), y_train)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(-1) == y_test).float().mean())
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # TorchScript is what Triton's PyTorch backend serves; keep it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(model).save(str(out))  # type: ignore[no-untyped-call]
    params = {
        "hidden": str(hidden),
        "epochs": str(epochs),
        "optimizer": "adam",
        "lr": "0.05",
        "seed": str(seed),
    }
    return TrainedDemo(out, accuracy, float(loss.detach()), params)


def has_ready_version(client: RegistryClient, name: str, description: str) -> bool:
    """Whether model ``name`` has a READY version; creates the model (with ``description``) if missing."""
    try:
        client.get_model(name)
    except RegistryClientError as exc:
        if exc.status != 404:
            raise
        client.create_model(name, description=description)
        return False
    return any(version.status == "READY" for version in client.list_versions(name))


def ensure_demo(client: RegistryClient, workdir: Path) -> int | None:
    """Register the demo once; returns the new version, or None when the registry already has it."""
    description = "Demo classifier made by `modelplane up` (3 classes, 4 features)"
    if has_ready_version(client, DEMO_NAME, description):
        return None
    trained = train(workdir / "demo-model.pt")
    version = client.create_version(
        DEMO_NAME,
        framework="pytorch",
        description="Trained on generated Gaussian blobs; input near a centre predicts that class.",
        signature=SIGNATURE,
        metrics={"accuracy": trained.accuracy, "loss": trained.loss},
        params=trained.params,
    )
    client.upload_artifact(DEMO_NAME, version.version, trained.path)
    client.set_alias(DEMO_NAME, DEMO_ALIAS, version.version)
    trained.path.unlink(missing_ok=True)
    return version.version


def write_demo_deployment(folder: Path) -> Path | None:
    """Write ``demo.yaml`` unless a file of that name is already there."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{DEMO_NAME}.yaml"
    if path.exists():
        return None
    path.write_text(DEMO_DEPLOYMENT)
    return path
