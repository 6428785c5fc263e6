"""Links are refused, never followed, by every stage after a training (neuralgraph.io's helpers,
the train rule's append-log, the explorer, the archive); the training view holds no W; the
seccomp program is well formed for both architectures."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuralgraph.io import (LinkRefusedError, atomic_write_json, atomic_write_text, check_no_links, open_nofollow,
                            read_json, read_text_nofollow)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def host(tmp_path):
    """A run folder and, outside it, a victim file and folder a planted link points to."""
    victim = tmp_path / "victim.txt"
    victim.write_text('{"secret": 1}\n', encoding="utf-8")
    victim_dir = tmp_path / "victim_dir"
    victim_dir.mkdir()
    run = tmp_path / "results" / "iter_001"
    run.mkdir(parents=True)
    return run, victim, victim_dir


def test_reads_refuse_a_linked_file_or_folder_and_a_fifo(host):
    run, victim, victim_dir = host
    (run / "training.json").symlink_to(victim)
    with pytest.raises(LinkRefusedError, match="training.json: is a symbolic link; refusing to follow it"):
        read_json(run / "training.json")
    (victim_dir / "metrics.json").write_text("{}", encoding="utf-8")
    (run / "plots").symlink_to(victim_dir)
    with pytest.raises(LinkRefusedError, match="plots: is a symbolic link"):
        read_text_nofollow(run / "plots" / "metrics.json")
    os.mkfifo(run / "node.json")
    with pytest.raises(LinkRefusedError, match="node.json: not a regular file"):
        read_json(run / "node.json")  # and it did not block on the FIFO
    (run / "ok.json").write_text('{"a": 1}', encoding="utf-8")
    assert read_json(run / "ok.json") == {"a": 1}


def test_writes_refuse_a_linked_folder_and_replace_a_linked_file(host):
    run, victim, victim_dir = host
    (run / "plots").symlink_to(victim_dir)
    with pytest.raises(LinkRefusedError, match="plots: is a symbolic link"):
        atomic_write_text(run / "plots" / "loss.png", "x")
    assert os.listdir(victim_dir) == []
    (run / "metrics.json").symlink_to(victim)
    with pytest.raises(LinkRefusedError):
        atomic_write_json(run / "metrics.json", {"a": 1})
    assert victim.read_text(encoding="utf-8") == '{"secret": 1}\n'
    with pytest.raises(LinkRefusedError):
        open_nofollow(run / "metrics.json", "ab")
    assert check_no_links(run / "fresh" / "file.txt") == run / "fresh" / "file.txt"  # missing parts are fine


def test_a_results_folder_that_is_a_link_to_scratch_storage_is_followed(tmp_path, monkeypatch):
    """The cluster habit `results -> /scratch/...` keeps working: only the node's own components are checked."""
    scratch = tmp_path / "scratch"
    (scratch / "demo" / "iter_001").mkdir(parents=True)
    project = tmp_path / "project"
    project.mkdir()
    (project / "results").symlink_to(scratch)
    monkeypatch.chdir(project)
    target = Path("results") / "demo" / "iter_001" / "metrics.json"
    atomic_write_json(target, {"connectivity_R2": 0.5})
    assert read_json(target) == {"connectivity_R2": 0.5}
    assert (scratch / "demo" / "iter_001" / "metrics.json").is_file()
    (scratch / "demo" / "iter_002").symlink_to(scratch / "demo" / "iter_001")  # a node folder stays refused
    with pytest.raises(LinkRefusedError, match="iter_002: is a symbolic link"):
        read_json(Path("results") / "demo" / "iter_002" / "metrics.json")


def test_the_train_rules_log_appender_refuses_a_link(host):
    run, victim, _ = host
    (run / "train.log").symlink_to(victim)
    proc = subprocess.run([sys.executable, "-m", "pipeline", "append-log", str(run / "train.log")], input=b"payload\n",
                          capture_output=True, cwd=REPO, timeout=60)
    assert proc.returncode == 1 and proc.stdout == b"payload\n"  # the declared log still gets it
    assert b"is a symbolic link; refusing to follow it" in proc.stderr
    assert victim.read_text(encoding="utf-8") == '{"secret": 1}\n'
    real = run / "real.log"
    for text in (b"one\n", b"two\n"):
        subprocess.run([sys.executable, "-m", "pipeline", "append-log", str(real)], input=text, check=True,
                       capture_output=True, cwd=REPO, timeout=60)
    assert real.read_bytes() == b"one\ntwo\n"


def test_the_explorer_does_not_embed_a_linked_file_and_the_archive_refuses_it(host, tmp_path):
    from pipeline.archive import create_archive
    from pipeline.explorer import _read_text

    run, victim, _ = host
    (run / "code.diff").symlink_to(victim)
    assert _read_text(run / "code.diff") == ""
    (run / "real.diff").write_text("+ x\n", encoding="utf-8")
    assert _read_text(run / "real.diff") == "+ x\n"
    results = run.parent
    create_archive(results, tmp_path / "a.tar.gz")  # links are left out of the listing ...
    import tarfile
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        names = tar.getnames()
    assert "results/iter_001/real.diff" in names and not [n for n in names if n.endswith("code.diff")]


def test_a_training_view_holds_the_arrays_the_trainer_needs_and_no_w(tmp_path, tiny_dataset):
    from neuralgraph.dataset import TRAINING_VIEW_METADATA, load_dataset, write_training_view

    _, data_dir = tiny_dataset
    view = write_training_view(data_dir, tmp_path / "view", with_support=True)
    assert sorted(p.name for p in view.iterdir()) == ["du.npy", "metadata.json", "support.npy", "training_view.json",
                                                      "u.npy"]
    assert set(read_json(view / "metadata.json")) <= set(TRAINING_VIEW_METADATA)
    loaded, full = load_dataset(view), load_dataset(data_dir)
    assert loaded.W is None and loaded.types is None and loaded.type_params is None
    assert np.array_equal(loaded.u, full.u) and np.array_equal(loaded.du, full.du)
    assert np.array_equal(loaded.support, np.asarray(full.W) != 0)
    assert loaded.n_neurons == full.n_neurons and loaded.delta_t == full.delta_t


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_seccomp_program_checks_the_architecture_first_and_refuses_mount(arch):
    from agent.seccomp import ARCHITECTURES, seccomp_program

    program = seccomp_program(arch)
    assert len(program) % 8 == 0 and len(program) // 8 < 4096
    insns = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    audit_arch, numbers = ARCHITECTURES[arch]
    assert insns[0] == (0x20, 0, 0, 4)  # load the arch field
    assert insns[1][0] == 0x15 and insns[1][3] == audit_arch  # a foreign arch jumps to ...
    assert insns[1 + 1 + insns[1][2]] == (0x06, 0, 0, 0x80000000)  # ... kill
    refused = {k for code, jt, jf, k in insns if code == 0x15}
    for name in ("mount", "umount2", "unshare", "setns", "ptrace", "keyctl", "bpf", "pivot_root", "chroot"):
        assert numbers[name] in refused, name
    with pytest.raises(RuntimeError, match="no seccomp filter for the architecture 'mips'"):
        seccomp_program("mips")
