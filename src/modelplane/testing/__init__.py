"""Test support shipped with the package: real servers for tests (PostgreSQL, later the dev cluster).

Kept in the package, like ``kopf.testing``, so that users' own test suites can reuse it.
"""
