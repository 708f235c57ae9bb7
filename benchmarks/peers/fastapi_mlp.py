"""The reference point: a bare FastAPI endpoint doing the same forward, V2-shaped JSON in and out.

Run with uvicorn (``MLP_MODEL_PATH`` names the TorchScript file).
"""

import os

import torch
from fastapi import FastAPI, Request

torch.set_num_threads(1)
model = torch.jit.load(os.environ["MLP_MODEL_PATH"]).eval()
app = FastAPI()


@app.get("/v2/health/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


@app.post("/v2/models/mlp/infer")
async def infer(request: Request) -> dict[str, object]:
    doc = await request.json()
    tensor = doc["inputs"][0]
    x = torch.tensor(tensor["data"], dtype=torch.float32).reshape(tensor["shape"])
    with torch.inference_mode():
        y = model(x)
    return {
        "model_name": "mlp",
        "outputs": [
            {"name": "OUTPUT__0", "datatype": "FP32", "shape": list(y.shape), "data": y.flatten().tolist()}
        ],
    }
