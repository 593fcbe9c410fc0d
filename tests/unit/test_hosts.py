"""Host names and host-scoped origins: where a run reads an origin from."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reconciler.hosts import same_host, this_host
from reconciler.kinds.replicas.config import OriginConfig
from reconciler.providers.location import Location


def test_host_names_compare_without_case_and_a_short_name_matches_its_full_one():
    assert same_host("exao1", "EXAO1")
    assert same_host("exao1", "exao1.lco.cl")
    assert same_host("exao1.lco.cl.", "exao1.lco.cl")
    assert not same_host("exao1", "exao2")
    assert not same_host("exao1.a.org", "exao1.b.org")


def test_reconciler_host_overrides_the_system_name(monkeypatch):
    monkeypatch.setenv("RECONCILER_HOST", "exao2")
    assert this_host() == "exao2"
    monkeypatch.setenv("RECONCILER_HOST", "")
    assert this_host() != ""


def test_an_origin_is_read_directly_on_its_host_and_over_ssh_elsewhere(monkeypatch):
    origin = OriginConfig(root="/data/telem", host="exao1")
    monkeypatch.setenv("RECONCILER_HOST", "exao1.lco.cl")
    assert origin.here and origin.location == Location("/data/telem")
    monkeypatch.setenv("RECONCILER_HOST", "backup")
    assert not origin.here and origin.location == Location("/data/telem", host="exao1")


def test_an_ssh_root_is_read_directly_on_its_own_host(monkeypatch):
    origin = OriginConfig(root="ssh://ops@exao1:2222/data/telem")
    assert origin.home == "exao1"
    monkeypatch.setenv("RECONCILER_HOST", "exao1")
    assert origin.location == Location("/data/telem")
    monkeypatch.setenv("RECONCILER_HOST", "backup")
    assert origin.location == Location("/data/telem", host="exao1", user="ops", port=2222)


def test_an_origin_without_a_host_is_read_where_the_run_is(monkeypatch):
    monkeypatch.setenv("RECONCILER_HOST", "anywhere")
    origin = OriginConfig(root="/data/telem")
    assert origin.here and origin.home is None and origin.location == Location("/data/telem")


@pytest.mark.parametrize(("fields", "message"), [
    ({"root": "/data", "local_only": True}, "local_only = true needs the origin's host"),
    ({"root": "ssh://exao1/data", "host": "exao2"}, "contradicts the ssh:// root's host"),
    ({"root": "/data", "host": "ops@exao1"}, "is not a host name"),
])
def test_host_settings_that_cannot_work_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        OriginConfig(**fields)
