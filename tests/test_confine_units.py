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
from netlets import landlock, mountns


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
    with pytest.raises(ConfinementError, match="as root" if os.geteuid() == 0 else "landlock unavailable"):
        choose_mode("landlock", tmp_path, 0)
    if os.geteuid() != 0:
        assert choose_mode("none", tmp_path, 7)[0] == "none"
    assert choose_mode("auto", tmp_path, 0)[0] in ("uid", "none")


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid mode is chosen only as root")
def test_as_root_the_mode_is_uid_even_in_an_unreachable_home_and_never_one_that_keeps_root(tmp_path):
    assert choose_mode("auto", tmp_path, 7)[0] == choose_mode("uid", tmp_path, 0)[0] == "uid"
    for mode in ("landlock", "none"):
        with pytest.raises(ConfinementError, match="as root"):
            choose_mode(mode, tmp_path, 7)


# -- a private mount namespace that reveals what is needed below a closed directory ---------
def test_a_path_other_users_cannot_read_itself_cannot_be_revealed(open_tmp):
    tmp_path = open_tmp
    closed = tmp_path / "closed"
    (closed / "open" / "deep").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    os.chmod(closed, 0o700)
    os.chmod(closed / "open", 0o755)
    plan = mountns.plan([closed / "open" / "deep", closed / "open"])
    assert plan == [(str(closed), [str(closed / "open")])]  # a path inside another is left to it
    os.chmod(closed / "open", 0o750)
    with pytest.raises(mountns.Unrevealable, match="cannot search"):
        mountns.plan([closed / "open"])


REVEAL = textwrap.dedent("""
    import json, os, sys
    from netlets import mountns, privileges
    reveal, uid = json.loads(sys.argv[1]), int(sys.argv[2])
    mountns.enter(reveal)
    privileges.drop(uid, uid, ())
    def attempt(f):
        try:
            return sorted(f())
        except OSError as err:
            return type(err).__name__
    print(json.dumps({p: attempt(lambda p=p: os.listdir(p)) for p in sys.argv[3:]}))
""")


@pytest.mark.skipif(os.geteuid() != 0, reason="a mount namespace and another uid need root")
def test_a_reveal_shows_the_needed_paths_under_a_cover_and_nothing_else(open_tmp):
    tmp_path = open_tmp
    closed = tmp_path / "closed"
    for d in ("python/lib", "secret"):
        (closed / d).mkdir(parents=True)
    (closed / "python" / "lib" / "os.py").write_text("")
    (closed / "secret" / "key").write_text("k")
    os.chmod(tmp_path, 0o755)
    for d, mode in ((closed, 0o700), (closed / "python", 0o755), (closed / "python" / "lib", 0o755),
                    (closed / "secret", 0o755)):
        os.chmod(d, mode)
    plan = mountns.plan([closed / "python"])
    out = subprocess.run([sys.executable, "-c", REVEAL, json.dumps(plan), str(ID_RANGE[-1]), str(closed / "python"),
                          str(closed / "python" / "lib"), str(closed), str(closed / "secret")],
                         capture_output=True, text=True, timeout=30, cwd="/")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {str(closed / "python"): ["lib"], str(closed / "python" / "lib"): ["os.py"],
                                      str(closed): ["python"], str(closed / "secret"): "FileNotFoundError"}
    assert sorted(os.listdir(closed)) == ["python", "secret"]  # the node's own view is unchanged


# -- capabilities and the seccomp filter, in a real child ---------------------------------
DROP = textwrap.dedent("""
    import json, os, sys
    from netlets import privileges
    uid = int(sys.argv[1]) if len(sys.argv) > 1 else None
    try:
        privileges.drop(uid, uid, (uid,) if uid else ())
    except privileges.StillPrivileged as err:
        print(json.dumps({"refused": str(err)}))
        sys.exit(0)
    status = privileges.status()
    print(json.dumps({"resuid": os.getresuid(), "groups": os.getgroups(), **status}))
""")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping root needs root")
def test_dropping_root_leaves_no_capability_not_even_in_the_bounding_set():
    uid = ID_RANGE[-1]
    out = subprocess.run([sys.executable, "-c", DROP, str(uid)], capture_output=True, text=True, timeout=30)
    seen = json.loads(out.stdout)
    assert seen["resuid"] == [uid] * 3 and seen["groups"] == [uid], seen
    assert all(seen[k] == 0 for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")), seen


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is for a process that is root")
def test_a_root_process_without_an_identity_refuses_to_go_on():
    out = subprocess.run([sys.executable, "-c", DROP], capture_output=True, text=True, timeout=30)
    assert "refusing to run app code" in json.loads(out.stdout)["refused"], out


SECCOMP = textwrap.dedent("""
    import json, os, socket, sys
    from netlets import landlock, seccomp
    f = sys.argv[1]
    landlock.no_new_privs()
    seccomp.install()
    def attempt(fn):
        try:
            fn()
            return "ok"
        except OSError as err:
            return err.strerror
    libc = __import__("ctypes").CDLL(None, use_errno=True)
    def unshare(flags):  # os.unshare is Python 3.12's
        if libc.unshare(flags) != 0:
            e = __import__("ctypes").get_errno()
            raise OSError(e, os.strerror(e))
    fd = os.open(f, os.O_RDONLY)
    print(json.dumps({
        "chmod": attempt(lambda: os.chmod(f, 0o600)), "chown": attempt(lambda: os.chown(f, -1, -1)),
        "utime": attempt(lambda: os.utime(f)), "setxattr": attempt(lambda: os.setxattr(f, "user.x", b"1")),
        "fsetxattr": attempt(lambda: os.setxattr(fd, "user.x", b"1")),
        "fchmod 0644": attempt(lambda: os.fchmod(fd, 0o644)), "fchmod 04700": attempt(lambda: os.fchmod(fd, 0o4700)),
        "AF_PACKET": attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM)),
        "SOCK_RAW": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 6)),
        "fchmod 0600": attempt(lambda: os.fchmod(fd, 0o600)), "fchmod 0": attempt(lambda: os.fchmod(fd, 0)),
        "fchown": attempt(lambda: os.fchown(fd, -1, -1)),
        "unshare user": attempt(lambda: unshare(0x10000000)),
        "unshare net": attempt(lambda: unshare(0x40000000)),
        "setuid file": attempt(lambda: os.close(os.open(f + ".suid", os.O_CREAT | os.O_WRONLY, 0o4755))),
        "setgid dir": attempt(lambda: os.mkdir(f + ".sgid", 0o2755)),
        "setuid fifo": attempt(lambda: os.mkfifo(f + ".fifo", 0o4644)),
        "plain file": attempt(lambda: os.close(os.open(f + ".new", os.O_CREAT | os.O_WRONLY, 0o644))),
        "plain dir": attempt(lambda: os.mkdir(f + ".dir", 0o755)),
        "thread": attempt(lambda: __import__("threading").Thread(target=lambda: None).start()),
        "subprocess": attempt(lambda: __import__("subprocess").run(["true"], check=True)),
        "fork": attempt(lambda: os.waitpid(pid, 0) if (pid := os.fork()) else os._exit(0)),
        "futimens": attempt(lambda: os.utime(fd)), "stat": attempt(lambda: os.stat(f)),
        "tcp": attempt(lambda: socket.socket().close()), "udp6": attempt(lambda: socket.socket(
            socket.AF_INET6, socket.SOCK_DGRAM).close()), "unix": attempt(lambda: socket.socket(socket.AF_UNIX).close()),
    }))
""")


def test_the_seccomp_filter_denies_metadata_namespaces_setuid_modes_and_raw_sockets_and_nothing_else(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    out = subprocess.run([sys.executable, "-c", SECCOMP, str(f)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    denied = ("chmod", "chown", "utime", "setxattr", "fsetxattr", "fchmod 0644", "fchmod 04700", "fchmod 0600",
              "fchmod 0", "fchown", "unshare user", "unshare net", "setuid file", "setgid dir", "setuid fifo",
              "AF_PACKET", "SOCK_RAW")
    assert {k: v for k, v in seen.items() if k in denied} == dict.fromkeys(denied, "Operation not permitted"), seen
    assert {k: v for k, v in seen.items() if k not in denied} == {k: "ok" for k in seen if k not in denied}, seen


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
