"""Shared pytest setup: hypothesis profiles (CI is reproducible and bounded)."""

import os

from hypothesis import HealthCheck, settings

from etcdutil import etcd, etcd_url  # noqa: F401  (a private etcd per test session, a key prefix per test)
from nodeutil import node  # noqa: F401  (the `node` fixture: a real hosting node in a temp home)

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=40, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
