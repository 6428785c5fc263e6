"""`snakemake archive` packs results/<exp> with a sha256 manifest; verify-archive catches tampering."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile

import pytest

from wf_helpers import REPO, TINY_NAME, job_counts, snakemake, workflow_env

pytestmark = pytest.mark.slow


def verify(path):
    """`python -m pipeline verify-archive PATH` -> (returncode, combined output)."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", "verify-archive", str(path)], capture_output=True,
                          text=True, env={**workflow_env(), "PYTHONPATH": str(REPO)}, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def repack(folder, out):
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return out


@pytest.fixture(scope="module")
def archive(tiny_run):
    result = snakemake(tiny_run.workdir, "archive").check()
    assert job_counts(result.output).get("archive") == 1
    path = tiny_run.workdir / "results" / "archives" / f"{TINY_NAME}.tar.gz"
    assert path.is_file()
    return path


def test_archive_holds_every_file_with_its_checksum(archive, tiny_run):
    with tarfile.open(archive) as tar:
        names = {m.name for m in tar.getmembers() if m.isfile()}
        manifest = tar.extractfile(f"{TINY_NAME}/MANIFEST.sha256").read().decode()
    results_files = {p.relative_to(tiny_run.results).as_posix() for p in tiny_run.results.rglob("*")
                     if p.is_file() and not any(part.startswith(".") for part in p.relative_to(tiny_run.results).parts)}
    assert {f"{TINY_NAME}/{rel}" for rel in results_files} | {f"{TINY_NAME}/MANIFEST.sha256"} == names
    listed = dict(reversed(line.split("  ", 1)) for line in manifest.splitlines())
    assert set(listed) == results_files
    metrics = tiny_run.iter_dir(3) / "metrics.json"
    assert listed["iter_003/metrics.json"] == hashlib.sha256(metrics.read_bytes()).hexdigest()


def test_round_trip_verifies(archive, tmp_path):
    code, output = verify(archive)
    assert code == 0 and "OK" in output, output
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    code, output = verify(tmp_path / TINY_NAME)
    assert code == 0, output


def test_changed_file_is_detected(archive, tmp_path):
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    folder = tmp_path / TINY_NAME
    metrics = folder / "iter_002" / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"connectivity_R2"', '"connectivity_R2" ', 1))
    code, output = verify(folder)
    assert code == 1 and "CHANGED: iter_002/metrics.json" in output, output
    code, output = verify(repack(folder, tmp_path / "tampered.tar.gz"))
    assert code == 1 and "CHANGED: iter_002/metrics.json" in output, output


def test_missing_file_is_detected(archive, tmp_path):
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    folder = tmp_path / TINY_NAME
    (folder / "iter_004" / "model.pt").unlink()
    code, output = verify(repack(folder, tmp_path / "incomplete.tar.gz"))
    assert code == 1 and "MISSING: iter_004/model.pt" in output, output


def test_truncated_archive_is_refused(archive, tmp_path):
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    code, output = verify(broken)
    assert code == 1 and "broken.tar.gz" in output, output


def test_archive_is_not_redone_when_up_to_date(archive, tiny_run):
    result = snakemake(tiny_run.workdir, "archive", "--dry-run").check()
    assert "Nothing to be done" in result.output, result.output[-2000:]
