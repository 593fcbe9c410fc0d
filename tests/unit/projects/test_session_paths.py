"""Where a Live session's files are: always inside the project's current directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.providers.cryosparc.model import rebase_session_dirs, session_directory


@pytest.mark.parametrize(("recorded", "expected"), [
    (None, "/data/P12/S1"),
    ("", "/data/P12/S1"),
    ("S1", "/data/P12/S1"),
    ("sessions/S1", "/data/P12/sessions/S1"),
    ("/data/P12/S1", "/data/P12/S1"),
    ("/data/P12/live/S1/", "/data/P12/live/S1"),
    ("/old/place/P12/S1", "/data/P12/S1"),        # the project moved away from there
    ("/data/P12-other/S1", "/data/P12/S1"),       # a sibling with a common prefix is not inside
    ("/data/P12", "/data/P12/S1"),                 # the project directory itself is not a session
])
def test_session_directory_is_inside_the_current_project(recorded, expected):
    assert session_directory("/data/P12", "S1", recorded) == Path(expected)


@pytest.mark.parametrize(("project_dir", "recorded"), [("", "S1"), ("relative/P12", None), ("/data/P12", "../x"),
                                                       ("/data/P12", "S1/../..")])
def test_session_directory_refuses_what_would_leave_the_project(project_dir, recorded):
    with pytest.raises(ValueError):
        session_directory(project_dir, "S1", recorded)


def test_rebase_carries_dirs_inside_the_old_directory_and_drops_the_rest():
    workspaces = [{"uid": "W1"}, {"uid": "W2", "session_dir": "/old/P1/S1"}, {"uid": "W3", "session_dir": "S2"},
                  {"uid": "W4", "session_dir": "/elsewhere/S3"}, {"uid": "W5", "session_dir": "/old/P1"}]
    assert rebase_session_dirs(workspaces, "/old/P1", "/new/P7") == [
        {"uid": "W1"}, {"uid": "W2", "session_dir": "/new/P7/S1"}, {"uid": "W3", "session_dir": "S2"},
        {"uid": "W4"}, {"uid": "W5"}]
