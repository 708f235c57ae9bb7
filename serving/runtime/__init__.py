"""The serving runtime: torch models over the KServe / Open Inference Protocol V2 (HTTP and gRPC).

Modules, one job each: ``config`` (Triton ``config.pbtxt``), ``repository`` (the model folder
layout), ``artifacts`` (fetching and verifying model files), ``loader`` (turning a file into a torch
module), ``codec`` (V2 tensors in JSON and binary form), ``batcher`` (dynamic batching),
``models`` (the set of served models and their states), ``http_app`` / ``grpc_service`` (the two
protocol front ends), ``metrics`` and ``server`` (process lifetime, drain on SIGTERM).
"""
