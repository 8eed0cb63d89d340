"""Folder haystacks: the files read and the files hashed are one listing (issue 20 item 1), and
the listing's rule (hidden names, __pycache__, suffix case, links, order, non-regular files)."""

import json
import os
from pathlib import Path

import pytest
from conftest import invoke

from niah.errors import NiahError
from niah.haystack import _read_text_source
from niah.haystack_files import haystack_files, haystack_files_digest
from niah.identity import haystack_digest

SMALL = ["--context", "256", "--max-tokens", "8", "-q", "--depth", "0.5"]
VISIBLE = "The river runs past the old mill. Birds sing at dawn. " * 20
HIDDEN = "A quiet town sleeps under the snow. Lamps glow in the windows. " * 20


def _cli(*args):
    return invoke(["run", *map(str, args)], catch_exceptions=False)


def _names(root: Path) -> list[str]:
    return [f.relative_to(root).as_posix() for f in haystack_files(root)]


def _folder(tmp_path: Path) -> Path:
    hay = tmp_path / "hay"
    (hay / ".hidden").mkdir(parents=True)
    (hay / "__pycache__").mkdir()
    (hay / "a.txt").write_text(VISIBLE)
    (hay / ".hidden" / "b.txt").write_text(HIDDEN)
    (hay / "__pycache__" / "c.txt").write_text(HIDDEN)
    (hay / ".d.txt").write_text(HIDDEN)
    return hay


@pytest.mark.slow
def test_cli_edited_hidden_file_never_keeps_a_stale_verdict(tmp_path, gguf_path):
    """Before: the reader read .hidden/b.txt but the digest skipped it, so an edit there was
    '0 run, 1 already done' with the old verdict on another prompt. Now hidden files are not
    read: the prompt is the same, so keeping the verdict is right; an edit to a read file is a
    new configuration."""
    hay, out = _folder(tmp_path), tmp_path / "out"
    first = _cli(*SMALL, "--haystack", hay, "--out", out)
    assert first.exit_code == 0, first.output
    ident = json.loads((next(out.iterdir()) / "config.json").read_text())["identity"]
    digest = ident["haystack_digest"]
    assert digest == haystack_digest(str(hay.resolve()))
    (hay / ".hidden" / "b.txt").write_text("Edited: the lighthouse keeper counts ships. " * 30)
    (hay / "__pycache__" / "c.txt").write_text("Edited too. " * 30)
    assert _read_text_source(hay) == VISIBLE  # nothing hidden is read: the prompt is unchanged
    second = _cli(*SMALL, "--haystack", hay, "--out", out)
    assert second.exit_code == 0, second.output
    assert "0 run, 1 already done" in second.stdout and len(list(out.iterdir())) == 1
    (hay / "a.txt").write_text(VISIBLE.replace("river", "creek"))  # a read file: same size
    third = _cli(*SMALL, "--haystack", hay, "--out", out)
    assert third.exit_code == 0, third.output
    assert "1 run, 0 already done" in third.stdout and len(list(out.iterdir())) == 2


def test_hidden_and_cache_files_are_neither_read_nor_hashed(tmp_path):
    hay = _folder(tmp_path)
    assert _names(hay) == ["a.txt"]
    assert _read_text_source(hay) == VISIBLE
    before = haystack_digest(str(hay))
    (hay / ".hidden" / "b.txt").write_text("changed")
    assert haystack_digest(str(hay)) == before
    (hay / "a.txt").write_text(VISIBLE.upper())  # same size, same second: still a new digest
    assert haystack_digest(str(hay)) != before


def test_every_read_file_is_hashed_and_nothing_else(tmp_path):
    """The digest changes when and only when a listed file's name or bytes change: a non-.txt
    file is neither read nor hashed; a .TXT file is both."""
    hay = tmp_path / "hay"
    (hay / "sub").mkdir(parents=True)
    (hay / "a.txt").write_text("Alpha. ")
    (hay / "sub" / "B.TXT").write_text("Beta. ")
    (hay / "notes.md").write_text("Gamma. ")
    assert _names(hay) == ["a.txt", "sub/B.TXT"]
    assert _read_text_source(hay) == "Alpha. \nBeta. "
    before = haystack_digest(str(hay))
    (hay / "notes.md").write_text("Delta. ")
    assert haystack_digest(str(hay)) == before
    (hay / "sub" / "B.TXT").write_text("Bota. ")
    assert haystack_digest(str(hay)) != before


def test_order_is_by_relative_path_parts_in_reader_and_digest(tmp_path):
    hay = tmp_path / "hay"
    (hay / "a").mkdir(parents=True)
    for name in ("a/b.txt", "a-b.txt", "B.txt", "a.txt"):
        (hay / name).write_text(name + ". ")
    names = _names(hay)
    assert names == ["B.txt", "a/b.txt", "a-b.txt", "a.txt"]
    assert _read_text_source(hay) == "\n".join(n + ". " for n in names)


def test_links_files_followed_folders_not(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_text("Outside. ")
    hay = tmp_path / "hay"
    hay.mkdir()
    (hay / "a.txt").write_text("Inside. ")
    (hay / "link.txt").symlink_to(outside / "x.txt")
    (hay / "dir").symlink_to(outside, target_is_directory=True)
    (hay / "loop").symlink_to(hay, target_is_directory=True)
    (hay / "dir.txt").symlink_to(outside, target_is_directory=True)
    assert _names(hay) == ["a.txt", "link.txt"]
    before = haystack_digest(str(hay))
    (outside / "x.txt").write_text("Changed outside. ")  # read through the link: hashed too
    assert haystack_digest(str(hay)) != before


def test_non_regular_txt_in_a_folder_is_refused_never_opened(tmp_path):
    """Before: a pipe named *.txt in a folder was opened and read until its writer closed it
    (the run hung) while the digest skipped it."""
    hay = tmp_path / "hay"
    hay.mkdir()
    (hay / "a.txt").write_text("Inside. ")
    (hay / "broken.txt").symlink_to(tmp_path / "nowhere.txt")
    with pytest.raises(NiahError, match="broken.txt' is not a regular file"):
        haystack_files(hay)
    (hay / "broken.txt").unlink()
    os.mkfifo(hay / "pipe.txt")
    for call in (_read_text_source, haystack_digest):
        with pytest.raises(NiahError, match="pipe.txt' is not a regular file"):
            call(str(hay) if call is haystack_digest else hay)


def test_a_txt_named_folder_is_walked_not_read(tmp_path):
    hay = tmp_path / "hay"
    (hay / "dir.txt").mkdir(parents=True)
    (hay / "dir.txt" / "in.txt").write_text("In a folder named like a file. ")
    assert _names(hay) == ["dir.txt/in.txt"]


def test_only_hidden_text_is_refused_with_one_line(tmp_path):
    hay = tmp_path / "hay"
    (hay / ".git").mkdir(parents=True)
    (hay / ".git" / "x.txt").write_text("hidden")
    with pytest.raises(
        NiahError,
        match=r"has no \.txt files \(hidden files and folders and "
        r"__pycache__ are not read\)",
    ) as err:
        haystack_files(hay)
    assert "\n" not in str(err.value)


def test_a_pipe_is_refused_not_read(tmp_path):
    """Before: a named pipe (or /dev/zero) was opened and read until its writer closed it, while
    the digest hashed nothing at all."""
    fifo = tmp_path / "hay.txt"
    os.mkfifo(fifo)
    with pytest.raises(NiahError, match="is not a regular file or a folder"):
        _read_text_source(fifo)
    with pytest.raises(NiahError, match="is not a regular file or a folder"):
        haystack_digest(str(fifo))


def test_generated_haystacks_ignore_a_path_of_their_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prose").mkdir()  # a folder without .txt files: reading it would be refused
    assert haystack_digest("prose") == "builtin:prose"
    assert haystack_digest("noise") == "builtin:noise"


def test_single_file_digest_is_its_sha256(tmp_path):
    import hashlib

    f = tmp_path / "hay.md"
    f.write_text("Any name works for a single file. ")
    assert haystack_files(f) == [f]
    assert haystack_files_digest(f) == hashlib.sha256(f.read_bytes()).hexdigest()
