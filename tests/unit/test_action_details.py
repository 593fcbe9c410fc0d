"""Typed action details: the model a diff builds is what the plan holds, key for key (so
typing changes no plan JSON and no action id), and an executor reading details that do not
fit gets one ApplyError naming the action."""

from __future__ import annotations

import pytest

from reconciler.engine.actions import Action
from reconciler.errors import ApplyError
from reconciler.kinds.backups.diff import PruneDetails
from reconciler.kinds.sessions.diff import ChangeDetails, DeleteDetails

CHANGE = {"instance": "cs", "project_uid": "P3", "session_uid": "S1", "session_dir": "/data/P3/S000001",
          "datatype": "thumbnails", "status": "archived", "from": "active"}


def test_the_plan_holds_exactly_the_declared_fields_and_the_id_is_the_dict_s() -> None:
    typed = Action.create(address="session:P3/S1/thumbnails", kind="set_state", reason="r",
                          details=ChangeDetails.model_validate(CHANGE))
    plain = Action.create(address="session:P3/S1/thumbnails", kind="set_state", reason="r", details=dict(CHANGE))
    assert typed.details == CHANGE  # "from", not "from_": the plan JSON as before
    assert typed.id == plain.id


def test_an_executor_reads_back_what_the_diff_built() -> None:
    details = DeleteDetails(**{**CHANGE, "status": "deleted"}, file_count=3, bytes=42)  # type: ignore[arg-type]
    action = Action.create(address="session:P3/S1/particles", kind="delete_data", reason="r", details=details)
    assert DeleteDetails.of(action) == details
    assert action.file_count == 3 and action.byte_count == 42


def test_details_that_do_not_fit_are_one_error_naming_the_action() -> None:
    action = Action.create(address="database:meteor", kind="prune", reason="r",
                           details={"backup_id": "b", "path": "/x", "manifest": "/x.manifest.json", "bytes": "many"})
    with pytest.raises(ApplyError, match=r"^database:meteor: the planned prune does not fit this version of "
                                         r"reconciler \((bytes|documents): .*\); run plan again$"):
        PruneDetails.of(action)
