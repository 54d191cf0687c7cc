"""Codebase uploads through a real node: in chunks, each its own authenticated call, under a quota.

Security review B3/B8: an archive no longer travels as one 65 MB call (every
node call is at most ~2 MiB); what a ``launch`` holder can make the node keep
that no app uses is bounded per uploader and per node; ``submit_app`` checks
the warrant before it parses a descriptor.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest

from hosting import codebases
from hosting.client import HostingClient, upload_codebase
from test_authz_attacks import _file, _tgz
from test_hosting_auth import _delegate
from warrants.errors import BadInput


def _random_codebase(size: int) -> bytes:
    return _tgz(lambda tar: _file(tar, "blob.bin", os.urandom(size)))


def _client(node, rights, app=None) -> HostingClient:
    xml, key = _delegate(node, rights, app=app)
    return HostingClient(node.client.uri, xml, key)


def test_an_archive_larger_than_one_call_is_uploaded_in_chunks_and_resumes_where_the_node_is(node):
    data = _random_codebase(3 * codebases.MAX_CHUNK_BYTES)  # random: the archive is as large
    sha = hashlib.sha256(data).hexdigest()
    client = node.client
    with pytest.raises(BadInput, match="sent in chunks"):
        client.call("upload_codebase", data[:codebases.MAX_CHUNK_BYTES + 1], None)
    assert client.call("upload_chunk", sha, 0, data[:codebases.MAX_CHUNK_BYTES]) == codebases.MAX_CHUNK_BYTES
    # a chunk at another offset changes nothing: the answer says where to resume
    assert client.call("upload_chunk", sha, 5, b"junk") == codebases.MAX_CHUNK_BYTES
    with pytest.raises(BadInput, match="sha256 mismatch"):  # incomplete: refused, and the partial is dropped
        client.call("upload_commit", sha)
    assert upload_codebase(client, data, sha) is True
    assert client.call("has_codebase", sha) is True
    assert (node.home / "codebases" / f"{sha}.tar.gz").read_bytes() == data
    assert upload_codebase(client, data, sha) is False  # content-addressed: already there
    assert not [p for p in (node.home / "codebases").iterdir() if p.name.startswith(".incoming-")]


def test_a_chunk_larger_than_the_limit_is_refused(node):
    sha = "0" * 64
    with pytest.raises(BadInput):
        node.client.call("upload_chunk", sha, 0, bytes(codebases.MAX_CHUNK_BYTES + 1))


def test_a_launch_holder_cannot_fill_the_disk_with_codebases_no_app_uses(node):
    # B8: each distinct upload was pinned for an hour, with no bound on how many.
    client = _client(node, ["launch"], app="greedy")
    kept = [client.call("upload_codebase", _tgz(lambda tar, i=i: _file(tar, f"m{i}.py")), None)
            for i in range(codebases.UPLOADER_MAX_CODEBASES)]
    assert len(set(kept)) == codebases.UPLOADER_MAX_CODEBASES
    with pytest.raises(codebases.QuotaExceeded, match=r"already keeps 8 codebases no app uses") as refused:
        client.call("upload_codebase", _tgz(lambda tar: _file(tar, "one-too-many.py")), None)
    assert refused.value.exit_code == 2 and "\n" not in str(refused.value)
    # another uploader is not held to this one's quota
    other = _client(node, ["launch"], app="other")
    assert other.call("upload_codebase", _tgz(lambda tar: _file(tar, "other.py")), None)


def test_submit_app_checks_the_warrant_before_parsing_the_descriptor(node):
    # B8: a descriptor of up to 1 MB was parsed before the warrant was looked at.
    import warrants

    client = _client(node, ["status"])  # no launch right
    junk = b"<" * (512 * 1024)
    with pytest.raises(warrants.InsufficientRights):
        client.call("submit_app", junk, "junk.xml", "0" * 64, False, True)
    scoped = _client(node, ["launch"], app="mine")
    from testkit.node import descriptor_xml
    other = descriptor_xml("theirs", '<netlet type="w" class="workers:Echo" replicas="1"/>').encode()
    with pytest.raises(warrants.InsufficientRights, match="scoped to app 'mine'"):
        scoped.call("submit_app", other, "theirs.xml", "0" * 64, False, True)
