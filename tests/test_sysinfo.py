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


def _harness_of_a_copy(where, env_sha: str | None) -> dict:
    """sysinfo.harness() as a copy of the package at `where` (no .git of its own) reports it."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    shutil.copytree(
        Path(sysinfo.__file__).parents[1], where / "ppharness", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {k: v for k, v in os.environ.items() if k != "PPBENCH_GIT_SHA"} | (
        {"PPBENCH_GIT_SHA": env_sha} if env_sha else {}
    )
    code = "import json; from ppharness.facts import sysinfo; print(json.dumps(sysinfo.harness()))"
    done = subprocess.run([sys.executable, "-c", code], cwd=where, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_copy_without_git_on_a_gpu_machine_takes_the_commit_from_the_environment(tmp_path):
    """No .git and no `make` on a lent machine: PPBENCH_GIT_SHA names the commit the copy came from."""
    assert _harness_of_a_copy(tmp_path, "79f1859")["git_sha"] == "79f1859"
    (tmp_path / "bare").mkdir()
    assert _harness_of_a_copy(tmp_path / "bare", None)["git_sha"] is None  # unknown, never guessed


def test_a_copy_inside_another_repository_does_not_take_its_commit(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "unrelated"], check=True)  # fmt: skip
    (tmp_path / "copy").mkdir()
    got = _harness_of_a_copy(tmp_path / "copy", "79f1859")
    assert got["git_sha"] == "79f1859" and got["git_sha_source"] == "PPBENCH_GIT_SHA"  # not the enclosing repo's
