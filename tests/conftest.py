"""Shared pytest setup: a hermetic environment, hypothesis profiles (CI is reproducible and bounded).

Hermetic: whatever ``JTRIX_*`` variables the caller exported (a ``JTRIX_HOME``
pointing at a live home, a ``JTRIX_HOST``, etcd TLS files) are removed before
any test runs, and ``JTRIX_HOME`` is pointed at a directory that does not
exist, so a test that forgets to make its own home can never touch the
caller's ``~/.jtrix``. Only the suite's own knobs (:data:`TEST_KNOBS`) pass.
"""

import atexit
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings

TEST_KNOBS = {"JTRIX_TESTDATA", "JTRIX_HYPOTHESIS_EXAMPLES"}
for _name in [n for n in os.environ if n.startswith("JTRIX_") and n not in TEST_KNOBS]:
    del os.environ[_name]
_NO_HOME = tempfile.mkdtemp(prefix="jtrix-no-home-")
atexit.register(shutil.rmtree, _NO_HOME, True)
os.environ["JTRIX_HOME"] = os.path.join(_NO_HOME, "absent")

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


#: Fixtures that start real hosting nodes or etcd: a test using one (directly or through another
#: fixture) is ``slow``, and so is every test of a module that starts nodes by hand.
SLOW_FIXTURES = {"node", "etcd", "etcd_url"}
SLOW_MODULES = {"test_chaos", "test_cli_apps", "test_cli_launch", "test_cluster", "test_cluster_netns",
                "test_etcd_tls", "test_membership", "test_linearizability_kvstore", "test_replication_e2e",
                "test_bootstrap", "test_hosting_failures", "test_hosting_auth", "test_hosting_status",
                "test_netlet_api", "test_pipeline"}


def pytest_collection_modifyitems(config, items):
    """``-m "not slow"`` is the inner-loop subset: pure logic, parsers, state machines, in-process
    servers. Everything that starts a node, a netlet or etcd is marked ``slow``."""
    import pytest

    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or module in SLOW_MODULES \
                or item.get_closest_marker("chaos"):
            item.add_marker(pytest.mark.slow)
