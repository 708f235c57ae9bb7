"""The generative engine: Hugging Face causal language models served with continuous batching.

- :mod:`.types`: what the API layer and the engine exchange (requests, sampling parameters,
  outputs, statistics, errors): the contract between the two;
- the engine (model, paged KV cache, scheduler, sampler) behind :class:`.types.Engine`;
- :mod:`.api`: the OpenAI-compatible API and Triton's generate extension over any ``Engine``.
"""
