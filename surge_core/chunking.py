"""Split documents into chunks for embedding, and pair chunks with their embeddings as store records.

`chunk_text` is greedy and deterministic: each chunk is at most `chunk_chars` long and ends at the best
boundary found in its second half, preferring a paragraph break, then a sentence end (or line break), then
a space; failing those, at the window's last space; only a word longer than the window is cut hard. Neighbouring chunks share up to `overlap_chars`
characters, starting at a word. Because a chunk depends only on the text up to one window past its start,
editing the end of a document leaves its earlier chunks (and their content hashes) unchanged, so a
re-ingested document rewrites only the chunks that actually changed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from surge_core.records import MetadataValue
from surge_core.vector_store.base import ChunkRecord

_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")
# Sentence end: terminal punctuation, optional closing quotes/brackets, then whitespace; CJK full stops
# (which no space follows); or a line break.
_SENTENCE = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*(?=\s)|[\u3002\uff01\uff1f][\u300d\u300f]?|(?=\n)")
_SPACE = re.compile(r"\s")


def _last_boundary(pattern: re.Pattern[str], text: str, lo: int, hi: int, *, at_end: bool) -> int | None:
    """The last boundary of `pattern` in text[lo:hi] (its match end if `at_end`, else its start)."""
    best = None
    for match in pattern.finditer(text, lo, hi):
        position = match.end() if at_end else match.start()
        if lo < position <= hi:
            best = position
    return best


def _break_point(text: str, start: int, hard_end: int, min_end: int) -> int:
    # Look one character past the window: a separator right at the limit still counts.
    window_end = min(len(text), hard_end + 1)
    for pattern, at_end in ((_PARAGRAPH, False), (_SENTENCE, True), (_SPACE, False)):
        position = _last_boundary(pattern, text, min_end, window_end, at_end=at_end)
        if position is not None and position <= hard_end:
            return position
    # A long word fills the second half: end before it (a short chunk) rather than cut a word in two.
    position = _last_boundary(_SPACE, text, start + 1, window_end, at_end=False)
    return position if position is not None and position <= hard_end else hard_end


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def chunk_text(text: str, chunk_chars: int, overlap_chars: int = 0) -> list[str]:
    """Split `text` into stripped, non-empty chunks of at most `chunk_chars` characters.

    Example: chunk_text("The cat sat. The dog ran far away. Birds sing.", 20) ->
    ["The cat sat.", "The dog ran far", "away. Birds sing."]: the first window ends at a sentence, the
    second holds no sentence end in its second half, so it ends at its last space.
    """
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars must be >= 1, got {chunk_chars}")
    if not 0 <= overlap_chars < chunk_chars:
        raise ValueError(f"overlap_chars must be >= 0 and < chunk_chars ({chunk_chars}), got {overlap_chars}")
    chunks: list[str] = []
    length = len(text)
    start = _skip_space(text, 0)
    while start < length:
        hard_end = start + chunk_chars
        if hard_end >= length:
            end = length
        else:
            # Only boundaries in the window's second half count, so chunks are not needlessly small.
            end = _break_point(text, start, hard_end, min_end=start + max(1, chunk_chars // 2))
        piece = text[start:end].strip()
        if piece:
            chunks.append(piece)
        if end >= length:
            break
        next_start = end
        if overlap_chars:
            next_start = end - overlap_chars
            # Begin the overlap at a word: move forward past the rest of a word cut in the middle.
            if not text[next_start - 1].isspace():
                space = _SPACE.search(text, next_start, min(length, end + 1))
                if space is not None:
                    next_start = space.end()
        next_start = _skip_space(text, next_start)
        start = next_start if next_start > start else end
    return chunks


def chunk_records(
    doc_id: str,
    chunks: Sequence[str],
    embeddings: Sequence[Sequence[float]],
    metadata: Mapping[str, MetadataValue] | None = None,
) -> list[ChunkRecord]:
    """One `ChunkRecord` per chunk, numbered from 0, each carrying the document's metadata."""
    if len(chunks) != len(embeddings):
        raise ValueError(
            f"document {doc_id!r}: {len(chunks)} chunks but {len(embeddings)} embeddings; they pair up 1:1"
        )
    shared = dict(metadata or {})
    return [
        ChunkRecord(doc_id=doc_id, chunk_index=index, text=chunk, embedding=embedding, metadata=shared)
        for index, (chunk, embedding) in enumerate(zip(chunks, embeddings, strict=True))
    ]
