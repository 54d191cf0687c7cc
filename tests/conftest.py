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
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

TEST_KNOBS = {"JTRIX_TESTDATA", "JTRIX_HYPOTHESIS_EXAMPLES"}
for _name in [n for n in os.environ if n.startswith("JTRIX_") and n not in TEST_KNOBS]:
    del os.environ[_name]
_NO_HOME = tempfile.mkdtemp(prefix="jtrix-no-home-")
atexit.register(shutil.rmtree, _NO_HOME, True)
os.environ["JTRIX_HOME"] = os.path.join(_NO_HOME, "absent")


from hosting.cluster.etcd import Etcd  # noqa: E402  (after the environment is made hermetic)
from testkit.etcd import EtcdServer, unique_prefix  # noqa: E402
from testkit.node import cleanup_node, start_node  # noqa: E402

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


#: Every test has exactly one kind, the most expensive thing it does (first match wins):
#:
#: ``chaos``    the bench/chaos.py runs (marked ``@pytest.mark.chaos`` in the test);
#: ``cluster``  starts etcd: uses one of :data:`CLUSTER_FIXTURES` (directly or through another
#:              fixture), or is in a module of :data:`CLUSTER_MODULES` (which start it by hand);
#: ``process``  starts a real hosting node, netlets or the CLI: uses :data:`PROCESS_FIXTURES`, or
#:              is in a module of :data:`PROCESS_MODULES` (which start them by hand);
#: ``property`` a hypothesis test (``@given`` or a state machine): in-process, many examples;
#: ``unit``     everything else: pure logic, parsers, in-process servers.
#:
#: ``slow`` is added to chaos, cluster and process tests, so ``-m "not slow"`` (the inner loop)
#: runs the unit and property tests only and starts no node, netlet, CLI or etcd.
KINDS = ("chaos", "cluster", "process", "property", "unit")
SLOW_KINDS = {"chaos", "cluster", "process"}
CLUSTER_FIXTURES = {"etcd", "etcd_url"}
CLUSTER_MODULES = {"test_cluster", "test_cluster_netns", "test_etcd_tls"}
PROCESS_FIXTURES = {"node"}
PROCESS_MODULES = {"test_cli_apps", "test_cli_launch", "test_cli_warrant", "test_membership",
                   "test_linearizability_kvstore", "test_replication_e2e", "test_bootstrap",
                   "test_hosting_failures", "test_hosting_auth", "test_hosting_status", "test_netlet_api",
                   "test_pipeline", "test_mass_election", "test_confinement", "test_security_confined"}


def kind_of(item) -> str:
    """The test's kind (see :data:`KINDS`)."""
    module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
    fixtures = set(getattr(item, "fixturenames", ()))
    if item.get_closest_marker("chaos"):
        return "chaos"
    if fixtures & CLUSTER_FIXTURES or module in CLUSTER_MODULES:
        return "cluster"
    if fixtures & PROCESS_FIXTURES or module in PROCESS_MODULES:
        return "process"
    if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
        return "property"
    return "unit"


def pytest_collection_modifyitems(config, items):
    """Mark every test with its kind, and the chaos, cluster and process ones ``slow``."""
    for item in items:
        kind = kind_of(item)
        item.add_marker(getattr(pytest.mark, kind))
        if kind in SLOW_KINDS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def node(tmp_path, monkeypatch):
    """A real hosting node in its own ``JTRIX_HOME`` (tmp_path/home); at teardown it and every
    process it ever started are SIGKILLed by pid (testkit.node.cleanup_node)."""
    home = tmp_path / "home"
    monkeypatch.setenv("JTRIX_HOME", str(home))
    running = start_node(home)
    try:
        yield running
    finally:
        cleanup_node(running)


@pytest.fixture(scope="session")
def etcd_url():
    """A private etcd for the session (per xdist worker), on free ports; skips the test when the
    ``etcd`` binary is missing (scripts/test.sh installs Debian's etcd-server as root)."""
    if shutil.which("etcd") is None:
        pytest.skip("etcd not installed (scripts/test.sh installs Debian's etcd-server as root)")
    root = Path(tempfile.mkdtemp(prefix="jtrix-etcd-"))
    server = EtcdServer(root)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def etcd(etcd_url) -> Etcd:
    """An etcd view on a key prefix no other test uses."""
    return Etcd(etcd_url, unique_prefix())


@pytest.fixture
def open_tmp():
    """A fresh directory below directories every user can search (unlike pytest's tmp_path, below
    a 0700 one): for what another uid (a confined netlet, a node run as nobody) must reach."""
    d = Path(tempfile.mkdtemp(prefix="jtrix-open-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
