"""Downloads and archives against a local HTTP server on 127.0.0.1 serving files the tests build."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from helpers import Behaviour, serve

from cxr.data.download import RemoteFile, extract_archive, fetch
from cxr.errors import DataError

BODY = bytes(range(256)) * 2000  # 512 kB


def remote(base: str, **kwargs) -> RemoteFile:
    return RemoteFile(f"{base}/file.bin", "file.bin", **kwargs)


def test_download_success_verifies_size_and_checksum(tmp_path: Path) -> None:
    with serve({"file.bin": BODY}) as base:
        path = fetch(
            remote(base, size=len(BODY), sha256=hashlib.sha256(BODY).hexdigest()),
            tmp_path,
            show_progress=False,
        )
    assert path.read_bytes() == BODY
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_resume_after_a_cut_connection(tmp_path: Path) -> None:
    state = Behaviour(cut_after=100_000, cuts_left=2)
    with serve({"file.bin": BODY}, state) as base:
        path = fetch(
            remote(base, md5=hashlib.md5(BODY).hexdigest()),
            tmp_path,
            backoff=0,
            show_progress=False,
        )
    assert path.read_bytes() == BODY
    assert [r["range"] for r in state.requests] == [None, "bytes=100000-", "bytes=200000-"]


def test_server_that_ignores_range_restarts_cleanly(tmp_path: Path) -> None:
    state = Behaviour(cut_after=100_000, cuts_left=1, ignore_range=True)
    with serve({"file.bin": BODY}, state) as base:
        path = fetch(remote(base), tmp_path, backoff=0, show_progress=False)
    assert path.read_bytes() == BODY


def test_transient_errors_are_retried(tmp_path: Path) -> None:
    state = Behaviour(fail_503=2)
    with serve({"file.bin": BODY}, state) as base:
        assert fetch(remote(base), tmp_path, backoff=0, show_progress=False).read_bytes() == BODY
    assert len(state.requests) == 3


def test_persistent_failure_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    with (
        serve({"file.bin": BODY}, Behaviour(fail_503=100)) as base,
        pytest.raises(DataError, match=r"failed after 2 retries \(HTTP 503\)"),
    ):
        fetch(remote(base), tmp_path, retries=2, backoff=0, show_progress=False)


def test_checksum_mismatch_removes_the_file(tmp_path: Path) -> None:
    with (
        serve({"file.bin": BODY}) as base,
        pytest.raises(DataError, match="sha256 checksum mismatch"),
    ):
        fetch(remote(base, sha256="0" * 64), tmp_path, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch_and_not_found(tmp_path: Path) -> None:
    with serve({"file.bin": BODY}) as base:
        with pytest.raises(DataError, match="expected 5"):
            fetch(remote(base, size=5), tmp_path, show_progress=False)
        with pytest.raises(DataError, match="HTTP 404"):
            fetch(RemoteFile(f"{base}/nope.bin", "nope.bin"), tmp_path, show_progress=False)


def test_credentials_are_sent_and_refusal_is_clear(tmp_path: Path) -> None:
    state = Behaviour(auth=("user", "s3cret"))
    with serve({"file.bin": BODY}, state) as base:
        with pytest.raises(
            DataError, match="refused \\(HTTP 401\\): check your credentials"
        ) as info:
            fetch(remote(base), tmp_path, auth=("user", "wrong"), show_progress=False)
        assert "wrong" not in str(info.value)
        assert (
            fetch(remote(base), tmp_path, auth=("user", "s3cret"), show_progress=False).read_bytes()
            == BODY
        )


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def make_tar(members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info in members:
            payload = (data or {}).get(info.name, b"")
            info.size = len(payload) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return buffer.getvalue()


def test_zip_extracts_all_or_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "ok.zip"
    archive.write_bytes(make_zip({"a/b.txt": b"hello", "c.txt": b"x"}))
    target = extract_archive(archive, tmp_path / "out")
    assert (target / "a" / "b.txt").read_bytes() == b"hello"


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"])
def test_zip_slip_is_refused(tmp_path: Path, evil: str) -> None:
    archive = tmp_path / "slip.zip"
    archive.write_bytes(make_zip({"fine.txt": b"x", evil: b"pwned"}))
    with pytest.raises(DataError, match="unsafe member"):
        extract_archive(archive, tmp_path / "out" / "x")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "x").exists()
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "out").iterdir())


def test_tar_link_escaping_the_target_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("images/link")
    link.type, link.linkname = tarfile.SYMTYPE, "../../etc/passwd"
    archive = tmp_path / "links.tar.gz"
    archive.write_bytes(make_tar([link]))
    with pytest.raises(DataError, match="points outside the target folder"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tar_dotdot_member_is_refused(tmp_path: Path) -> None:
    member = tarfile.TarInfo("../evil.txt")
    archive = tmp_path / "dotdot.tar.gz"
    archive.write_bytes(make_tar([member], {"../evil.txt": b"x"}))
    with pytest.raises(DataError, match="unsafe member"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_truncated_archive_is_a_clear_error(tmp_path: Path, kind: str) -> None:
    members = {f"f{i}.bin": bytes(range(256)) * 200 for i in range(5)}
    if kind == "zip":
        data = make_zip(members)
    else:
        infos = [tarfile.TarInfo(name) for name in members]
        data = make_tar(infos, members)
    archive = tmp_path / f"cut.{kind}"
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
