"""Pack an experiment's results folder into a ``.tar.gz`` with a sha256 manifest, and verify one.

WHY: an exploration produces dozens of iterations (configs, code snapshots, checkpoints,
metrics, agent memory) that a neuroscientist hands to a colleague or a journal. The archive
must say, file by file, what it is supposed to contain, so that a changed, truncated or
missing file is detected when it is unpacked years later. The manifest uses the
``sha256sum`` format (``<hex>  <path>``), so ``sha256sum -c MANIFEST.sha256`` works on an
unpacked copy without this package.

Commands (routed by ``python -m pipeline``)::

    python -m pipeline archive --results results/demo --out results/demo.tar.gz
    python -m pipeline verify-archive results/demo.tar.gz      # or an unpacked folder

``verify-archive`` exits 0 when every file matches and 1 when a file is changed, missing or
not listed, naming each one.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator

from neuralgraph.io import atomic_path, open_nofollow

MANIFEST_NAME = "MANIFEST.sha256"
_CHUNK = 1 << 20


def sha256_of_stream(stream: IO[bytes]) -> str:
    """sha256 of a binary stream, read in chunks (datasets can be hundreds of MB)."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_of_file(path: Path) -> str:
    with open_nofollow(path, "rb") as fh:  # a link is refused, never followed
        return sha256_of_stream(fh)


def files_to_archive(root: Path) -> list[Path]:
    """Every regular file under ``root``, relative and sorted, without hidden files.

    Hidden names are skipped because the atomic writers create ``.<name>.XXXX.tmp`` files
    that only exist while a write is in progress; they are never results.
    """
    paths = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or rel.as_posix() == MANIFEST_NAME:
            continue
        if path.is_file() and not path.is_symlink():
            paths.append(rel)
    return paths


def format_manifest(entries: Iterable[tuple[str, str]]) -> str:
    """``sha256sum``-compatible text from (relative path, hex digest) pairs."""
    return "".join(f"{digest}  {rel}\n" for rel, digest in entries)


def parse_manifest(text: str, source: str) -> dict[str, str]:
    """Read manifest text into {relative path: hex digest}, refusing malformed lines."""
    entries: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{source}: line {lineno} is not '<sha256>  <path>': {line!r}")
        entries[rel] = digest
    return entries


def create_archive(results: Path, out: Path) -> int:
    """Write ``out`` (a .tar.gz of ``results`` with MANIFEST.sha256 first); return file count.

    The archive's top folder is the results folder's name, so unpacking never spills files
    into the current directory. The archive is written to a temporary file and renamed, so an
    interrupted run never leaves a truncated archive that looks complete.
    """
    if not results.is_dir():
        raise FileNotFoundError(f"{results}: results folder not found")
    top = results.name
    rel_paths = files_to_archive(results)
    if not rel_paths:
        raise ValueError(f"{results}: no files to archive")
    manifest = format_manifest((rel.as_posix(), sha256_of_file(results / rel)) for rel in rel_paths)
    manifest_bytes = manifest.encode("utf-8")
    with atomic_path(out, suffix=".tar.gz") as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            info = tarfile.TarInfo(f"{top}/{MANIFEST_NAME}")
            info.size = len(manifest_bytes)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(manifest_bytes))
            for rel in rel_paths:
                # the file as opened without following links: a link that replaced it since the listing is refused
                with open_nofollow(results / rel, "rb") as fh:
                    info = tar.gettarinfo(arcname=f"{top}/{rel.as_posix()}", fileobj=fh)
                    tar.addfile(info, fh)
    return len(rel_paths)


@dataclass
class VerifyReport:
    """Outcome of checking files against a manifest."""

    checked: int = 0
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.unlisted)

    def lines(self) -> list[str]:
        out = [f"CHANGED: {rel} (sha256 differs from the manifest)" for rel in self.changed]
        out += [f"MISSING: {rel} (listed in the manifest, not present)" for rel in self.missing]
        out += [f"UNLISTED: {rel} (present, not in the manifest)" for rel in self.unlisted]
        return out


def compare(manifest: dict[str, str], actual: Iterator[tuple[str, str]]) -> VerifyReport:
    """Compare (path, digest) pairs found in an archive or folder with the manifest."""
    report = VerifyReport()
    seen = set()
    for rel, digest in actual:
        seen.add(rel)
        if rel not in manifest:
            report.unlisted.append(rel)
        elif manifest[rel] != digest:
            report.changed.append(rel)
        else:
            report.checked += 1
    report.missing = sorted(set(manifest) - seen)
    return report


def _archive_members(tar: tarfile.TarFile) -> Iterator[tuple[str, tarfile.TarInfo]]:
    """(path below the top folder, member) for every regular file but the manifest."""
    for member in tar:
        if not member.isfile():
            continue
        _, _, rel = member.name.partition("/")
        if rel and rel != MANIFEST_NAME:
            yield rel, member


def verify_tarball(path: Path) -> VerifyReport:
    """Check every file of a .tar.gz against the MANIFEST.sha256 it carries."""
    with tarfile.open(path, "r:gz") as tar:
        manifest_members = [m for m in tar.getmembers() if m.name.endswith(f"/{MANIFEST_NAME}")]
        if not manifest_members:
            raise ValueError(f"{path}: no {MANIFEST_NAME} in the archive (not made by 'pipeline archive'?)")
        manifest_fh = tar.extractfile(manifest_members[0])
        manifest = parse_manifest(manifest_fh.read().decode("utf-8"), f"{path}:{manifest_members[0].name}")

        def digests() -> Iterator[tuple[str, str]]:
            for rel, member in _archive_members(tar):
                yield rel, sha256_of_stream(tar.extractfile(member))

        return compare(manifest, digests())


def verify_folder(path: Path) -> VerifyReport:
    """Check an unpacked archive folder against its MANIFEST.sha256."""
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: manifest not found")
    manifest = parse_manifest(manifest_path.read_text(encoding="utf-8"), str(manifest_path))
    return compare(manifest, ((rel.as_posix(), sha256_of_file(path / rel)) for rel in files_to_archive(path)))


def main(argv: list[str] | None = None) -> int:
    """``pipeline archive``: pack a results folder with a sha256 manifest."""
    parser = argparse.ArgumentParser(prog="python -m pipeline archive", description=main.__doc__)
    parser.add_argument("--results", required=True, type=Path, help="results folder, e.g. results/demo")
    parser.add_argument("--out", required=True, type=Path, help="archive to write (.tar.gz)")
    args = parser.parse_args(argv)
    if args.out.resolve().is_relative_to(args.results.resolve()):
        parser.error(f"--out {args.out}: must lie outside --results {args.results} (an archive cannot contain itself)")
    try:
        count = create_archive(args.results, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"pipeline archive: {exc}", file=sys.stderr)
        return 1
    print(f"archived {count} files of {args.results} into {args.out} (manifest {MANIFEST_NAME})")
    return 0


def main_verify(argv: list[str] | None = None) -> int:
    """``pipeline verify-archive``: check an archive (or unpacked folder) against its manifest."""
    parser = argparse.ArgumentParser(prog="python -m pipeline verify-archive", description=main_verify.__doc__)
    parser.add_argument("archive", type=Path, help="a .tar.gz made by 'pipeline archive', or its unpacked folder")
    args = parser.parse_args(argv)
    try:
        if args.archive.is_dir():
            report = verify_folder(args.archive)
        elif args.archive.is_file():
            report = verify_tarball(args.archive)
        else:
            raise FileNotFoundError(f"{args.archive}: archive not found")
    except (FileNotFoundError, ValueError) as exc:
        print(f"pipeline verify-archive: {exc}", file=sys.stderr)
        return 1
    except (tarfile.TarError, EOFError, OSError) as exc:  # truncated or corrupted archive
        print(f"pipeline verify-archive: {args.archive}: FAILED, not a readable .tar.gz ({exc})", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line, file=sys.stderr)
    if not report.ok:
        print(f"{args.archive}: FAILED ({len(report.lines())} problem(s), {report.checked} files intact)", file=sys.stderr)
        return 1
    print(f"{args.archive}: OK ({report.checked} files match {MANIFEST_NAME})")
    return 0
