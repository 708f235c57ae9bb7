"""CUDA sanity on a machine with a GPU; skipped cleanly elsewhere (see the ``gpu`` marker)."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.gpu
def test_cuda_matmul_matches_cpu() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(256, 128, generator=generator)
    b = torch.randn(128, 64, generator=generator)
    on_gpu = (a.cuda() @ b.cuda()).cpu()
    torch.testing.assert_close(on_gpu, a @ b, rtol=1e-3, atol=1e-3)
