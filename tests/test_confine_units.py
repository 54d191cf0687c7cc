"""The parts of netlet confinement and the private home, each against the real thing
(kernel Landlock in a child process, SQLite, files), without a node."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hosting.confine import ID_RANGE, ConfinementError, choose_mode, unknown_to_system
from hosting.home import make_private
from hosting.registry import Registry
from hosting.secretbox import SecretBox
from netlets import landlock


# -- sealed secrets -----------------------------------------------------------
@settings(max_examples=25)
@given(app=st.text(min_size=1, max_size=40), secret=st.binary(min_size=16, max_size=64))  # 16+: never in random bytes by chance
def test_a_sealed_secret_opens_only_for_its_app(tmp_path_factory, app, secret):
    box = SecretBox(tmp_path_factory.mktemp("box") / "secrets.key")
    sealed = box.seal(app, secret)
    assert secret not in sealed and box.is_sealed(sealed)
    assert box.open(app, sealed) == secret
    with pytest.raises(InvalidTag):
        box.open(app + "x", sealed)


def test_the_key_file_is_private_and_kept(tmp_path):
    key = tmp_path / "secrets.key"
    sealed = SecretBox(key).seal("a", b"s" * 32)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert SecretBox(key).open("a", sealed) == b"s" * 32  # the same key on the next run
    with pytest.raises(InvalidTag):
        SecretBox(tmp_path / "other.key").open("a", sealed)


def test_an_older_registry_has_its_clear_secrets_sealed_when_opened(tmp_path):
    path = tmp_path / "r.sqlite"
    old = Registry(path)  # no sealer: what an earlier version wrote
    old.add_app("app", b"<app/>", "src", "0" * 64, b"k" * 32, [])
    old.close()
    reg = Registry(path, SecretBox(tmp_path / "secrets.key"))
    assert reg.app_secret("app") == b"k" * 32
    assert reg.app("app")["secret"] != b"k" * 32 and b"k" * 32 not in path.read_bytes()
    reg.close()


# -- the id table ---------------------------------------------------------------
class IdAllocation(RuleBasedStateMachine):
    """allocate/release against a model: one id per owner, one owner per id, lowest free first."""

    RANGE = range(100, 104)

    def __init__(self):
        super().__init__()
        import tempfile

        self.dir = tempfile.mkdtemp()
        self.reg = Registry(Path(self.dir) / "r.sqlite")
        self.model: dict[str, int] = {}

    @rule(owner=st.sampled_from(["app:a", "app:b", "app:c", "codebase:x", "codebase:y"]))
    def allocate(self, owner):
        free = [i for i in self.RANGE if i not in self.model.values()]
        if owner not in self.model and not free:
            with pytest.raises(RuntimeError):
                self.reg.allocate_id(owner, self.RANGE)
            return
        expected = self.model.get(owner, free[0] if free else None)
        assert self.reg.allocate_id(owner, self.RANGE) == expected
        self.model[owner] = expected

    @rule(owner=st.sampled_from(["app:a", "app:b", "app:c", "codebase:x", "codebase:y"]))
    def release(self, owner):
        self.reg.release_id(owner)
        self.model.pop(owner, None)

    @invariant()
    def agrees(self):
        for owner in ("app:a", "app:b", "app:c", "codebase:x", "codebase:y"):
            assert self.reg.id_of(owner) == self.model.get(owner)

    def teardown(self):
        self.reg.close()
        import shutil

        shutil.rmtree(self.dir)


TestIdAllocation = IdAllocation.TestCase
TestIdAllocation.settings = settings(max_examples=20, stateful_step_count=25, deadline=None)


def test_ids_the_system_knows_are_never_given(tmp_path):
    reg = Registry(tmp_path / "r.sqlite")
    with pytest.raises(RuntimeError, match="in use"):  # root, daemon, bin: every system has them
        reg.allocate_id("app:a", range(0, 3), unknown_to_system)
    given = reg.allocate_id("app:a", ID_RANGE, unknown_to_system)
    assert unknown_to_system(given) and not unknown_to_system(0)
    reg.close()


# -- choosing the mode --------------------------------------------------------------
def test_a_mode_that_cannot_be_given_is_refused(tmp_path):
    with pytest.raises(ConfinementError, match="unknown confinement"):
        choose_mode("jail", tmp_path, 7)
    with pytest.raises(ConfinementError, match="landlock unavailable"):
        choose_mode("landlock", tmp_path, 0)
    assert choose_mode("none", tmp_path, 7)[0] == "none"
    assert choose_mode("auto", tmp_path, 0)[0] in ("uid", "none")


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid mode is chosen only as root")
def test_as_root_an_unreachable_home_falls_back_to_landlock_and_says_why(tmp_path):
    blocked = next(p for p in reversed(tmp_path.parents) if not os.stat(p).st_mode & stat.S_IXOTH)
    mode, why = choose_mode("auto", tmp_path, 7)
    assert mode == "landlock" and str(blocked) in why
    with pytest.raises(ConfinementError, match=str(blocked)):
        choose_mode("uid", tmp_path, 7)


# -- the private home ---------------------------------------------------------------
def test_make_private_closes_every_entry_and_follows_no_link(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("not the home's")
    os.chmod(outside, 0o644)
    home = tmp_path / "home"
    (home / "sub").mkdir(parents=True)
    (home / "sub" / "f").write_text("x")
    os.chmod(home, 0o755)
    os.chmod(home / "sub", 0o775)
    os.chmod(home / "sub" / "f", 0o666)
    (home / "sub" / "link").symlink_to(outside)
    assert make_private(home) == 3
    assert [stat.S_IMODE(os.stat(p).st_mode) for p in (home, home / "sub", home / "sub" / "f")] == [0o700, 0o700, 0o600]
    assert stat.S_IMODE(os.stat(outside).st_mode) == 0o644
    assert make_private(home) == 0


# -- Landlock in a real child process -------------------------------------------------
PROBE = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    from netlets import landlock
    allowed, secret, parent = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    landlock.no_new_privs()
    abi = landlock.restrict([landlock.Rule(allowed, writable=True), landlock.Rule(Path(sys.prefix), writable=False),
                             landlock.Rule(Path(sys.base_prefix), writable=False),
                             landlock.Rule(Path(landlock.__file__).parent.parent, writable=False)])
    def attempt(f):
        try:
            f()
            return "ok"
        except OSError as err:
            return type(err).__name__
    print(json.dumps({"abi": abi,
                      "write inside": attempt(lambda: (allowed / "f").write_text("x")),
                      "read outside": attempt(lambda: open(secret).read()),
                      "signal parent": attempt(lambda: os.kill(parent, signal.SIGCONT))}))
""")


@pytest.mark.skipif(landlock.abi() == 0, reason="landlock unavailable")
def test_landlock_holds_a_process_to_its_rules(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("s")
    out = subprocess.run([sys.executable, "-c", PROBE, str(allowed), str(secret), str(os.getpid())],
                         capture_output=True, text=True, timeout=30, start_new_session=True)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["write inside"] == "ok" and seen["read outside"] == "PermissionError", seen
    if seen["abi"] >= 6:
        assert seen["signal parent"] == "PermissionError", seen


def test_no_new_privs_is_set_for_the_process_and_its_children():
    out = subprocess.run([sys.executable, "-c", "from netlets import landlock; import subprocess; "
                          "landlock.no_new_privs(); subprocess.run(['grep', 'NoNewPrivs', '/proc/self/status'])"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["NoNewPrivs:", "1"], out
