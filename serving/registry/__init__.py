"""The model registry: models, versions, aliases, artifacts, tokens, audit log and webhooks over REST.

Layers, outermost first: ``api`` (FastAPI routes, HTTP only) → ``service`` (business rules, audit,
webhook outbox) → ``store`` (SQLAlchemy, one transaction per write) → ``models`` (the ORM tables).
``artifacts`` keeps blobs on a content-addressed filesystem store; ``client`` is the typed client.
"""
