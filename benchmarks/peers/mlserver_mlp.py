"""Seldon MLServer custom runtime serving the benchmark's TorchScript MLP (loaded by ``mlserver start``)."""

import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class TorchMLP(MLModel):
    async def load(self) -> bool:
        torch.set_num_threads(1)
        self._model = torch.jit.load(self.settings.parameters.uri).eval()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        with torch.inference_mode():
            y = self._model(torch.from_numpy(x)).numpy()
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("OUTPUT__0", y)])
