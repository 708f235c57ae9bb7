"""The local stack behind ``modelplane up``: registry, router and runtimes on one machine, no Kubernetes."""
