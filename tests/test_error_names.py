"""Errors have unique names, and the table in rpc.errors names each client-visible one where it lives."""

import importlib
import re

import pytest

import rpc.errors
from warrants.errors import JtrixError

MODULES = ("hosting.node", "hosting.auth", "hosting.client", "hosting.bindings", "hosting.control",
           "rpc.credential", "netlets.replication", "netlets.bootstrap", "launcher.launch")


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_jtrix_error_has_a_unique_name():
    for module in MODULES:
        importlib.import_module(module)
    names = [cls.__name__ for cls in _subclasses(JtrixError)]
    assert sorted(names) == sorted(set(names))


def test_the_error_table_names_each_error_where_it_is_defined():
    rows = re.findall(r"^``(\w+)``\s+([\w.]+)\s", rpc.errors.__doc__, re.M)
    assert len(rows) >= 15
    for name, module in rows:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, JtrixError), name


def test_the_renamed_replication_exports_still_resolve_with_a_warning():
    import netlets.replication as replication
    for old, new in (("Fenced", "MasterFenced"), ("ProtocolError", "MalformedMessage")):
        with pytest.warns(DeprecationWarning, match=new):
            assert getattr(replication, old) is getattr(replication, new)
    with pytest.raises(AttributeError):
        replication.NoSuchThing  # noqa: B018
