"""KServe's Python ModelServer serving the benchmark's TorchScript MLP (V2 REST and gRPC).

Run inside the kserve virtualenv: ``python kserve_mlp.py --model_path M --http_port P --grpc_port G``
(kserve parses its own flags from the command line). Per-request logging is off, as for every peer:
no latency logging and no access log (KServe's defaults have both on).
"""

import argparse
import logging

import torch
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve import model_server as kserve_model_server


class TorchMLP(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        torch.set_num_threads(1)
        self.model = torch.jit.load(path).eval()
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        with torch.inference_mode():
            y = self.model(torch.from_numpy(x)).numpy()
        out = InferOutput(name="OUTPUT__0", shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=False)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[out])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve_model_server.parser])
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    server = ModelServer(
        http_port=args.http_port, grpc_port=args.grpc_port, workers=1, enable_latency_logging=False
    )
    logging.getLogger("uvicorn.access").disabled = True  # configured with a handler by KServe
    server.start([TorchMLP("mlp", args.model_path)])
