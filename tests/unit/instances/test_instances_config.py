"""Bad [users] and [lanes] config: one line each, naming the file, the line and the fix."""

from __future__ import annotations

import pytest

from tests.conftest import invoke_cli

BASE = ('[databases.cs]\nuri = "mongodb://127.0.0.1:1"\ndatabase = "meteor"\n\n'
        '[instances.new]\ndatabase = "cs"\ninstance_id = "id-new"\n\n')


@pytest.mark.parametrize(("body", "expected"), [
    ('[users."alice.example.org"]\nname = "A"\n', "is not an email address"),
    ('[users."a@x.org"]\npassword = "hunter2"\n', "put the password in an environment variable"),
    ('[users."a@x.org"]\ninitial_password_env = "hunter2 is my password"\n', "names an environment variable"),
    ('[users."a@x.org"]\ninstances = ["old"]\n', 'names "old", which is not an [instances.*] entry'),
    ('[users."a@x.org"]\n\n[users."A@X.org"]\n', "is the same email as"),
    ('[lanes.ws]\ntype = "node"\n', "a node lane needs at least one target"),
    ('[lanes.hpc]\ntype = "cluster"\n', "a cluster lane needs cluster_info"),
    ('[lanes.ws]\ntype = "node"\ntargets = [{ hostname = "g", ssh = "u@g", worker_path = "opt/w" }]\n',
     "worker_path must be absolute"),
    ('[instances.x]\ndatabase = "cs"\ninstance_id = "id-x"\nmigrate_from = "nowhere"\n',
     'migrate_from = "nowhere" must name another [instances.*] entry'),
    ('[instances.x]\ndatabase = "cs"\ninstance_id = "id-x"\nmigrate_from = "new"\nmigration = "copy"\n',
     "migration"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path, capsys, body, expected):
    config = tmp_path / "reconciler.toml"
    config.write_text(BASE + body)
    result = invoke_cli(["--config", str(config), "validate"], capsys)
    assert result.code == 1
    lines = [line for line in (result.out + result.err).splitlines() if line.strip()]
    assert any(expected in line and line.startswith(f"{config}:") for line in lines), lines
    assert "hunter2" not in result.out + result.err or "initial_password_env" in body
