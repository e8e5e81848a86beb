"""Records as a git revision holds them, read without a checkout: `REF` (its `results/`) or
`REF:PATH`, e.g. `origin/main` or `HEAD~1:out/ci`, for `ppbench compare --against` (`load_base`:
a results file or folder where one exists by that name, else a revision). Files are
listed with `git ls-tree` and read with one `git cat-file --batch`; nothing in the work tree or
the index changes. Only `.jsonl` files are read."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd

from ppharness.errors import BenchError
from ppharness.record.load import Readers, load, load_bytes

DEFAULT_PATH = "results"


def split(spec: str) -> tuple[str, str]:
    """`REF[:PATH]` as (REF, PATH); a ref name cannot hold a colon (git check-ref-format)."""
    ref, _, path = spec.partition(":")
    return ref, path.strip("/") or DEFAULT_PATH


def _git(args: list[str], cwd: Path | None, stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, check=False)
    except FileNotFoundError:
        raise BenchError("cannot read a git revision: git is not installed") from None
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, args, done.stdout, done.stderr)
    return done.stdout


def read(spec: str, cwd: Path | None = None) -> list[tuple[str, bytes]]:
    """Each `.jsonl` file under PATH at REF as (`REF:file`, its bytes), sorted by name."""
    ref, path = split(spec)
    if not ref or ref.startswith("-"):  # never an option to git
        raise BenchError(f"{spec!r} is neither a results file or folder nor a git revision")
    try:
        commit = _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd).decode()
    except subprocess.CalledProcessError as exc:
        why = exc.stderr.decode(errors="replace").strip().splitlines()
        raise BenchError(
            f"{spec!r} is neither a results file or folder nor a git revision here" + (f" ({why[-1]})" if why else "")
        ) from None
    commit = commit.strip()
    try:
        listed = _git(["ls-tree", "-r", "-z", "--full-name", "--name-only", commit, "--", path], cwd)
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"cannot list {path} at {ref}: {exc.stderr.decode(errors='replace').strip()}") from None
    names = sorted(n for n in listed.decode(errors="surrogateescape").split("\0") if n.endswith(".jsonl"))
    if not names:
        raise BenchError(f"{ref} holds no .jsonl results file under {path}/")
    out = _git(["cat-file", "--batch"], cwd, "".join(f"{commit}:{n}\n" for n in names).encode(errors="surrogateescape"))
    files, at = [], 0
    for name in names:  # each: "<oid> blob <size>\n<bytes>\n"
        end = out.index(b"\n", at)
        header = out[at:end].split()
        if len(header) != 3 or header[1] != b"blob":
            raise BenchError(f"cannot read {name} at {ref}: git cat-file says {out[at:end].decode(errors='replace')}")
        size = int(header[2])
        files.append((f"{ref}:{name}", out[end + 1 : end + 1 + size]))
        at = end + 1 + size + 1
    return files


def load_base(spec: str, readers: Readers | None = None, samples: str | None = "lists") -> pd.DataFrame:
    """The records `spec` names: a results file or folder where one exists, else a git revision's
    (`REF` or `REF:PATH`), as `load` lays them out."""
    if Path(spec).exists():
        return load([Path(spec)], readers, samples=samples)
    return load_bytes(read(spec), samples=samples)
