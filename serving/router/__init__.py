"""The model-aware router: discovery, weighted version split, least-outstanding balancing, resilience."""
