"""Spare intent files: a closed intent's file is the next intent's, so that uploads
remove no file; spares nobody holds are removed, never settled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from darkroom.catalog import intent_spares, intents
from server.helpers import held

LONG = intents.Entry("a-rather-long-key/with/folders/photo.jpg", "a" * 32, "1" * 64)
SHORT = intents.Entry("b.jpg", "b" * 32, "2" * 64)


def spare_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(intent_spares.PATTERN))


def test_a_closed_intent_s_file_holds_the_next_intent(tmp_path: Path):
    first = intents.intend(tmp_path, LONG)
    inode = first.path.stat().st_ino
    first.close()
    [spare] = spare_files(tmp_path)
    assert spare.stat().st_ino == inode and held(spare)
    assert not list(tmp_path.glob("intent-*"))

    second = intents.intend(tmp_path, SHORT)
    assert second.path.stat().st_ino == inode and not spare.exists()
    assert second.path.suffix == ".json" and held(second.path)
    # emptied first: nothing of the longer entry is left after the shorter one
    assert intents.Entry(**json.loads(second.path.read_bytes())) == SHORT
    second.close()
    assert [p.stat().st_ino for p in spare_files(tmp_path)] == [inode]


def test_a_replacement_s_intent_is_written_in_a_new_file(tmp_path: Path):
    """Its kept bytes are left alone only beside a `.new` or `.json` file, so a spare
    (named otherwise while it is written) would let a settling process remove them."""
    intents.intend(tmp_path, LONG).close()
    [spare] = spare_files(tmp_path)
    replacing = intents.intend(tmp_path, intents.Entry("c.jpg", "c" * 32, "3" * 64,
                                                       "replace"), b"the bytes before")
    assert spare.exists() and replacing.path.stat().st_ino != spare.stat().st_ino
    assert replacing.previous() == b"the bytes before"
    replacing.close()
    assert not list(tmp_path.glob("intent-*")) and len(spare_files(tmp_path)) == 2


def test_a_spare_nobody_holds_is_removed_and_never_settled(tmp_path: Path):
    intents.intend(tmp_path, SHORT).close()
    [mine] = spare_files(tmp_path)
    dead = tmp_path / "spare-0123.intent"  # a killed process's, an old intent in it
    dead.write_text(json.dumps(LONG.__dict__))

    assert list(intents.left(tmp_path)) == []
    assert spare_files(tmp_path) == [mine] and held(mine)


def test_a_spare_removed_by_hand_is_dropped_and_the_intent_made_anew(tmp_path: Path):
    intents.intend(tmp_path, LONG).close()
    [spare] = spare_files(tmp_path)
    spare.unlink()  # a tidy operator
    intent = intents.intend(tmp_path, SHORT)
    assert intents.Entry(**json.loads(intent.path.read_bytes())) == SHORT
    intent.close()
    assert len(spare_files(tmp_path)) == 1


def test_a_spare_renamed_by_hand_is_given_up_for_a_new_file(tmp_path: Path):
    intents.intend(tmp_path, LONG).close()
    [spare] = spare_files(tmp_path)
    spare.rename(tmp_path / "moved")  # still linked, no longer where this process put it
    intent = intents.intend(tmp_path, SHORT)
    assert intents.Entry(**json.loads(intent.path.read_bytes())) == SHORT
    assert intent.path.stat().st_ino != (tmp_path / "moved").stat().st_ino
    intent.close()


def test_at_most_kept_spares_are_kept(tmp_path: Path):
    open_ = [intents.intend(tmp_path, SHORT) for _ in range(intent_spares.KEPT + 3)]
    for intent in open_:
        intent.close()
    assert len(spare_files(tmp_path)) == intent_spares.KEPT
    assert not list(tmp_path.glob("intent-*"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_a_forked_child_leaves_its_parent_s_spares_alone(tmp_path: Path):
    intents.intend(tmp_path, SHORT).close()
    [spare] = spare_files(tmp_path)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: it must make its own intent file, not take the spare
        try:
            intent = intents.intend(tmp_path, LONG)
            os.write(write, b"new" if intent.path.stat().st_ino != spare.stat().st_ino
                     else b"spare")
            intent.path.unlink()
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.waitpid(child, 0)
    os.close(read)
    assert answer == b"new"
    assert spare_files(tmp_path) == [spare] and held(spare)  # still the parent's, locked
    mine = intents.intend(tmp_path, SHORT)
    assert not spare.exists()  # taken by the parent
    mine.close()


def test_a_process_removes_its_spares_as_it_exits(tmp_path: Path):
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from darkroom.catalog import intents
        folder = Path(sys.argv[1])
        for _ in range(3):
            intents.intend(folder, intents.Entry("k.jpg", "i" * 32, "0" * 64)).close()
        assert len(list(folder.glob("spare-*.intent"))) == 1
    """)
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=60)
    assert list(tmp_path.iterdir()) == []
