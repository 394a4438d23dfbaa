"""chunk_text: boundaries, overlap, determinism, no empty chunks, long words; chunk_records pairing."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from surge_core.chunking import chunk_records, chunk_text

PROSE = (
    "Ray Serve composes deployments. Each one scales on its own! Does it scale to zero? It does.\n\n"
    "Kafka decouples producers from consumers. Retries and dead letters are the default.\n\n"
    "The retriever keeps an index of chunks, and the gateway asks it for the closest ones."
)


def words(text: str) -> list[str]:
    return text.split()


def random_text(rng: random.Random) -> str:
    vocabulary = ["a", "to", "serve", "kafka", "replica", "autoscaling", "x" * rng.randint(1, 60)]
    parts: list[str] = []
    for _ in range(rng.randint(0, 120)):
        parts.append(rng.choice(vocabulary))
        parts.append(rng.choice([" ", " ", " ", ". ", "! ", "\n", "\n\n", "  \t", ", "]))
    return "".join(parts)


def test_short_text_is_one_stripped_chunk() -> None:
    assert chunk_text("  Hello there.  \n", 100, 10) == ["Hello there."]


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t \n"])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert chunk_text(text, 50, 5) == []


def test_paragraph_breaks_are_preferred() -> None:
    chunks = chunk_text(PROSE, 120, 0)
    assert chunks[0] == PROSE.split("\n\n")[0]
    assert chunks[1] == PROSE.split("\n\n")[1]


def test_sentence_ends_are_preferred_over_spaces() -> None:
    text = "The cat sat. The dog ran far away. Birds sing."
    assert chunk_text(text, 20) == ["The cat sat.", "The dog ran far", "away. Birds sing."]
    sentences = "One small sentence here. " * 20
    assert all(chunk.endswith(".") for chunk in chunk_text(sentences, 60, 0))


def test_cjk_sentences_end_at_their_full_stops() -> None:
    text = "\u4eca\u65e5\u306f\u6674\u308c\u3067\u3059\u3002" * 6  # "Today is sunny." six times, no spaces
    chunks = chunk_text(text, 20, 0)
    assert all(chunk.endswith("\u3002") for chunk in chunks)
    assert "".join(chunks) == text


def test_words_are_not_split_when_a_space_is_in_reach() -> None:
    text = " ".join(f"word{i}" for i in range(200))
    vocabulary = set(words(text))
    for chunk in chunk_text(text, 37, 0):
        assert set(words(chunk)) <= vocabulary


def test_a_word_longer_than_a_chunk_is_cut_hard() -> None:
    assert chunk_text("x" * 250, 100, 0) == ["x" * 100, "x" * 100, "x" * 50]
    assert chunk_text("ab " + "y" * 30 + " cd", 10, 0) == ["ab", "y" * 10, "y" * 10, "y" * 10, "cd"]


def test_neighbouring_chunks_share_the_overlap_starting_at_a_word() -> None:
    text = " ".join(f"w{i:03d}" for i in range(300))  # every word is 4 characters
    chunks = chunk_text(text, 60, 15)
    assert len(chunks) > 5
    for previous, current in itertools.pairwise(chunks):
        shared = words(current)[0]
        assert shared in words(previous), "the next chunk starts inside the previous one"
        overlap = previous[previous.rindex(shared) :]
        assert 0 < len(overlap) <= 15
        assert current.startswith(overlap)


def test_without_overlap_the_chunks_cover_the_text_exactly_once() -> None:
    assert words(" ".join(chunk_text(PROSE, 50, 0))) == words(PROSE)


def test_with_overlap_no_word_is_lost() -> None:
    chunks = chunk_text(PROSE, 50, 20)
    # Remove each chunk's overlap with the previous one: the words then read as the original text.
    rebuilt = words(chunks[0])
    for chunk in chunks[1:]:
        chunk_words = words(chunk)
        for skip in range(len(chunk_words), -1, -1):
            if rebuilt[len(rebuilt) - skip :] == chunk_words[:skip]:
                rebuilt.extend(chunk_words[skip:])
                break
    assert rebuilt == words(PROSE)


def test_same_text_gives_same_chunks() -> None:
    assert chunk_text(PROSE * 5, 90, 25) == chunk_text(PROSE * 5, 90, 25)


def test_editing_the_end_keeps_earlier_chunks() -> None:
    original = PROSE * 4
    edited = original + " One more closing sentence, appended later."
    before, after = chunk_text(original, 80, 20), chunk_text(edited, 80, 20)
    assert after[: len(before) - 1] == before[:-1]


def test_random_texts_keep_every_invariant() -> None:
    rng = random.Random(20261129)
    for _ in range(300):
        text = random_text(rng)
        size = rng.randint(5, 120)
        overlap = rng.randint(0, size - 1)
        chunks = chunk_text(text, size, overlap)
        assert chunks == chunk_text(text, size, overlap)
        assert all(chunk and chunk == chunk.strip() and len(chunk) <= size for chunk in chunks)
        if overlap == 0:
            assert "".join(re.sub(r"\s", "", c) for c in chunks) == re.sub(r"\s", "", text)
        assert bool(chunks) == bool(text.strip())


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, 11), (10, -1)])
def test_impossible_sizes_are_rejected(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk_chars|overlap_chars"):
        chunk_text("text", size, overlap)


def test_chunk_records_number_chunks_and_carry_the_document_metadata() -> None:
    records = chunk_records("doc-1", ["first", "second"], [[1.0, 0.0], [0.0, 1.0]], {"lang": "en"})
    assert [(r.doc_id, r.chunk_index, r.text) for r in records] == [
        ("doc-1", 0, "first"),
        ("doc-1", 1, "second"),
    ]
    assert all(r.metadata == {"lang": "en"} for r in records)
    assert records[1].embedding == [0.0, 1.0]


def test_chunk_records_need_one_embedding_per_chunk() -> None:
    with pytest.raises(ValueError, match="2 chunks but 1 embeddings"):
        chunk_records("doc-1", ["first", "second"], [[1.0, 0.0]])
