"""Provenance without the network: DMI parsing, git state, versions."""

from ppharness.facts import sysinfo


def test_ec2_type_from_dmi(tmp_path):
    (tmp_path / "sys_vendor").write_text("Amazon EC2\n")
    (tmp_path / "product_name").write_text("trn1.32xlarge\n")
    assert sysinfo.ec2_instance_type(tmp_path) == "trn1.32xlarge"
    (tmp_path / "product_name").write_text("Standard PC (Q35 + ICH9, 2009)\n")
    assert sysinfo.ec2_instance_type(tmp_path) is None
    (tmp_path / "sys_vendor").write_text("QEMU\n")
    (tmp_path / "product_name").write_text("p5.48xlarge\n")
    assert sysinfo.ec2_instance_type(tmp_path) is None  # only Amazon's DMI names an instance
    assert sysinfo.ec2_instance_type(tmp_path / "missing") is None


def test_system_and_harness_blocks():
    s = sysinfo.system({"cuda": "12.8"})
    assert s["cpu_model"] and s["cpu_count"] >= 1 and s["torch"] and s["versions"]["cuda"] == "12.8"
    h = sysinfo.harness()
    assert h["version"]
    if h["git_sha"] is not None:  # inside a checkout
        assert len(h["git_sha"]) == 40 and isinstance(h["dirty"], bool)


def test_a_copy_without_git_takes_the_commit_it_is_told(monkeypatch):
    monkeypatch.setattr(sysinfo, "git_state", lambda: (None, None))
    monkeypatch.delenv("PPBENCH_GIT_SHA", raising=False)
    assert sysinfo.harness()["git_sha"] is None
    monkeypatch.setenv("PPBENCH_GIT_SHA", "79f1859")
    h = sysinfo.harness()
    assert (h["git_sha"], h["dirty"], h["git_sha_source"]) == ("79f1859", None, "PPBENCH_GIT_SHA")
    monkeypatch.setattr(sysinfo, "git_state", lambda: ("a" * 40, False))  # a real checkout wins
    assert sysinfo.harness() == {"version": h["version"], "git_sha": "a" * 40, "dirty": False}
