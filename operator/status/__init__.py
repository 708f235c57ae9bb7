"""Status of a ModelDeployment: Kubernetes-style conditions, decided by pure policy functions."""
