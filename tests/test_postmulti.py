"""postmulti: the list layout, instance selection and instance management
(config files only: no mail system runs here)."""

from __future__ import annotations

import pytest

from pymaster.commands import postmulti


@pytest.fixture
def default(tmp_path, monkeypatch):
    etc = tmp_path / "etc" / "postfix"
    etc.mkdir(parents=True)
    (etc / "main.cf").write_text(f"queue_directory = {tmp_path}/spool/postfix\n"
                                 f"data_directory = {tmp_path}/lib/postfix\n")
    (etc / "main.cf.proto").write_text("myhostname = proto.example\n")
    (etc / "master.cf.proto").write_text("")
    monkeypatch.setenv("MAIL_CONFIG", str(etc))
    monkeypatch.setattr(postmulti.check, "set_permissions", lambda cfg: None)
    return etc


def test_create_needs_init(default, capsys):
    with pytest.raises(postmulti.Fatal, match="run 'postmulti -e init' first"):
        postmulti.run(["-I", "postfix-out", "-e", "create"])


def test_init_create_list_enable_destroy(default, tmp_path, capsys):
    assert postmulti.run(["-e", "init"]) == 0
    text = (default / "main.cf").read_text()
    assert "multi_instance_wrapper = ${command_directory}/postmulti -p --" in text
    assert "multi_instance_enable = yes" in text
    assert postmulti.run(["-I", "postfix-out", "-G", "mta", "-e", "create"]) == 0
    out = tmp_path / "etc" / "postfix-out"
    main_cf = (out / "main.cf").read_text()
    assert f"queue_directory = {tmp_path}/spool/postfix-out" in main_cf
    assert f"data_directory = {tmp_path}/lib/postfix-out" in main_cf
    assert "master_service_disable = inet" in main_cf
    assert "multi_instance_name = postfix-out" in main_cf
    assert f"multi_instance_directories = {out}" in (default / "main.cf").read_text()
    capsys.readouterr()
    postmulti.run(["-l"])
    assert capsys.readouterr().out == (
        f"-               -               y         {default}\n"
        f"postfix-out     mta             n         {out}\n")
    postmulti.run(["-l", "-g", "mta"])
    assert capsys.readouterr().out.startswith("postfix-out     mta             n ")
    assert postmulti.run(["-i", "postfix-out", "-e", "enable"]) == 0
    with pytest.raises(postmulti.Fatal, match="Cannot remove enabled instances"):
        postmulti.run(["-i", "postfix-out", "-e", "destroy"])
    assert postmulti.run(["-i", "postfix-out", "-e", "disable"]) == 0
    assert postmulti.run(["-i", "postfix-out", "-e", "destroy"]) == 0
    assert not out.exists()
    assert "postfix-out" not in (default / "main.cf").read_text().split(
        "multi_instance_directories")[1]


def test_no_matching_instance(default):
    with pytest.raises(postmulti.Fatal, match="No matching instances"):
        postmulti.run(["-i", "nosuch", "-x", "true"])


def test_x_runs_with_mail_config(default, capfd):
    assert postmulti.run(["-i", "-", "-x", "sh", "-c", 'echo "$MAIL_CONFIG"']) == 0
    assert capfd.readouterr().out == f"{default}\n"
    assert postmulti.run(["-x", "false"]) == 1


def test_conflicting_directories(default, tmp_path):
    postmulti.run(["-e", "init"])
    with pytest.raises(postmulti.Fatal, match="conflicts with instance"):
        postmulti.run(["-I", "postfix-out", "-e", "create",
                       f"queue_directory={tmp_path}/spool/postfix"])
