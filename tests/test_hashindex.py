"""The hash index: content hashes reused while size and mtime hold, recomputed otherwise."""

import os

import pytest

from lympho import hashindex
from lympho.data import CohortError
from lympho.hashindex import HashIndex, content_hash

OLD = 1_600_000_000 * 10**9  # a modification time long past (ns)


def write(path, data: bytes, mtime_ns: int = OLD):
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


@pytest.fixture
def spy(monkeypatch):
    """Paths whose bytes were hashed."""
    read = []

    def counting(path):
        read.append(os.path.basename(path))
        return content_hash(path)

    monkeypatch.setattr(hashindex, "content_hash", counting)
    return read


def test_unchanged_files_are_not_read_again(tmp_path, spy):
    files = [write(tmp_path / f"{i}.jpg", bytes([i]) * 100) for i in range(3)]
    index = HashIndex(tmp_path / "index.sqlite")
    first = index.hashes(files)
    assert first == [content_hash(f) for f in files] and len(spy) == 3
    assert HashIndex(tmp_path / "index.sqlite").hashes(files[::-1]) == first[::-1] and len(spy) == 3


def test_a_changed_size_or_mtime_is_hashed_again(tmp_path, spy):
    a, b = write(tmp_path / "a.jpg", b"x" * 100), write(tmp_path / "b.jpg", b"y" * 100)
    index = HashIndex(tmp_path / "index.sqlite")
    index.hashes([a, b])
    write(a, b"z" * 101)  # size changed, same mtime
    write(b, b"w" * 100, OLD + 1)  # same size, mtime changed
    assert index.hashes([a, b]) == [content_hash(a), content_hash(b)] and spy == ["a.jpg", "b.jpg"] * 2


def test_rehash_catches_a_change_that_kept_size_and_mtime(tmp_path):
    a = write(tmp_path / "a.jpg", b"x" * 100)
    index = HashIndex(tmp_path / "index.sqlite")
    before = index.hashes([a])
    write(a, b"y" * 100)  # same size, mtime restored: invisible to the index
    assert index.hashes([a]) == before
    assert index.hashes([a], rehash=True) == [content_hash(a)] != before
    assert index.hashes([a]) == [content_hash(a)]  # and the index was corrected


def test_a_file_written_just_now_is_not_trusted(tmp_path, spy):
    a = tmp_path / "a.jpg"
    a.write_bytes(b"x" * 100)
    stamp = os.stat(a).st_mtime_ns
    index = HashIndex(tmp_path / "index.sqlite")
    index.hashes([a])
    write(a, b"y" * 100, stamp)  # rewritten within the clock's resolution
    assert index.hashes([a]) == [content_hash(a)] and len(spy) == 2


def test_a_damaged_index_is_moved_aside_and_rebuilt(tmp_path):
    (tmp_path / "index.sqlite").write_bytes(b"not a database" * 100)
    a = write(tmp_path / "a.jpg", b"x" * 100)
    assert HashIndex(tmp_path / "index.sqlite").hashes([a]) == [content_hash(a)]
    assert len(list(tmp_path.glob("index.sqlite.corrupt-*"))) == 1


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CohortError, match="gone.jpg"):
        HashIndex(tmp_path / "index.sqlite").hashes([tmp_path / "gone.jpg"])


def test_an_index_that_cannot_be_opened_is_done_without(tmp_path, spy):
    (tmp_path / "index.sqlite").mkdir()  # not a file: SQLite cannot open it (as when read-only)
    a = write(tmp_path / "a.jpg", b"x" * 100)
    index = HashIndex(tmp_path / "index.sqlite")
    assert index.hashes([a]) == index.hashes([a]) == [content_hash(a)] and len(spy) == 2
    assert (tmp_path / "index.sqlite").is_dir()  # left as it was, not moved aside
