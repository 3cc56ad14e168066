"""Downloads go through a temporary file and are kept only when their MD5 matches (file:// URLs)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rnnzoo.pipeline.tasks.base import TaskError
from rnnzoo.pipeline.tasks.download import download, md5_of, verify_md5

CONTENT = b"rnnzoo test payload\n" * 100
MD5 = hashlib.md5(CONTENT).hexdigest()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "mirror" / "data.bin"
    path.parent.mkdir()
    path.write_bytes(CONTENT)
    return path


def test_md5_of_and_verify_md5_accept_the_right_digest(source: Path) -> None:
    assert md5_of(source) == MD5
    verify_md5(source, MD5.upper())  # digests compare case-insensitively


def test_verify_md5_names_file_expected_and_actual(source: Path) -> None:
    with pytest.raises(TaskError, match=rf"data\.bin: md5 is {MD5}, expected 0{{32}}"):
        verify_md5(source, "0" * 32)


def test_download_from_file_url_writes_the_verified_file(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "data.bin"
    assert download([source.as_uri()], dest, MD5) == dest
    assert dest.read_bytes() == CONTENT
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.bin"]  # no temporary file left


def test_download_falls_through_to_the_next_mirror(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    download([(tmp_path / "missing.bin").as_uri(), source.as_uri()], dest, MD5)
    assert dest.read_bytes() == CONTENT


def test_bad_checksum_leaves_no_file_and_names_both_digests(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "data.bin"
    with pytest.raises(TaskError, match=rf"(?s)could not download data\.bin.*md5 is {MD5}, expected f{{32}}.*removed"):
        download([source.as_uri()], dest, "f" * 32)
    assert list(dest.parent.iterdir()) == []


def test_unreachable_urls_fail_cleanly_listing_each(tmp_path: Path) -> None:
    urls = [(tmp_path / "a").as_uri(), (tmp_path / "b").as_uri()]
    with pytest.raises(TaskError, match=r"(?s)could not download x\.gz.*/a: .*/b: "):
        download(urls, tmp_path / "x.gz", None)
    assert not (tmp_path / "x.gz").exists()
