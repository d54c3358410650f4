"""Tests of joining chunk transcripts (spacing, CJK, overlap de-duplication, full stops)."""

from __future__ import annotations

import re

import pytest

from mimo_watchd.joining import is_cjk, join


def words(text: str) -> list[str]:
    """The words of a text, lower-cased, punctuation ignored (how the end-to-end tests compare)."""
    return re.findall(r"\w+", text.lower())


def test_single_text_is_returned_stripped() -> None:
    """One chunk comes back as it was, without surrounding whitespace."""
    assert join(["  Hello there.  "], [False]) == "Hello there."


def test_no_texts_join_to_empty() -> None:
    """No chunks give an empty transcript."""
    assert join([], []) == ""


def test_mismatched_lengths_are_refused() -> None:
    """Texts and overlap flags must pair up."""
    with pytest.raises(ValueError, match="2 texts but 1"):
        join(["a", "b"], [False])


def test_silence_cuts_join_with_one_space_keeping_punctuation() -> None:
    """Chunks cut in a pause are joined with one space; their full stops stay."""
    assert join(["do re mi.", "fa so.", "la ti."], [False, False, False]) == (
        "do re mi. fa so. la ti.")


def test_cjk_boundaries_get_no_space() -> None:
    """No space is added where either side of a boundary is CJK."""
    assert join(["你好。", "世界。"], [False, False]) == "你好。世界。"
    assert join(["价格是", "100元"], [False, False]) == "价格是100元"
    assert join(["OK", "好的"], [False, False]) == "OK好的"
    assert join(["こんにちは", "hello"], [False, False]) == "こんにちはhello"


def test_empty_chunks_are_skipped() -> None:
    """A silent chunk (empty transcript) adds neither text nor spaces."""
    assert join(["one two.", "", "  ", "three."], [False, False, False, False]) == (
        "one two. three.")


def test_overlap_removes_repeated_words() -> None:
    """Words the overlapped chunk repeats from the end of the previous one appear once."""
    left = "we will meet on the second floor of the old library."
    right = "Floor of the old library at noon."
    assert join([left, right], [False, True]) == (
        "we will meet on the second floor of the old library at noon.")


def test_overlap_comparison_ignores_case_and_punctuation() -> None:
    """Repeats are found whatever their case and punctuation."""
    assert words(join(["alpha, Beta gamma!", "BETA gamma? delta."], [False, True])) == [
        "alpha", "beta", "gamma", "delta"]


def test_overlap_drops_the_full_stop_of_the_cut() -> None:
    """The full stop the model puts at a cut without a pause is removed."""
    assert join(["one two three.", "four five."], [False, True]) == "one two three four five."


def test_question_mark_at_an_overlapped_cut_is_kept() -> None:
    """Only full stops are treated as artefacts of a cut; other punctuation stays."""
    assert join(["is it three?", "Four five."], [False, True]) == "is it three? Four five."


def test_overlap_tolerates_a_clipped_word_at_each_edge() -> None:
    """A word clipped by the cut on either side is dropped when two words still match."""
    left = "one two three four fi."
    right = "wo three four five six seven."
    assert join([left, right], [False, True]) == "one two three four five six seven."


def test_overlap_is_bounded_to_a_small_window() -> None:
    """Matches longer than the window are not searched (only the edges are compared)."""
    repeated = " ".join(f"w{i}" for i in range(12))
    joined = join([repeated + ".", repeated + "."], [False, True])
    assert len(words(joined)) > 12


def test_repeated_words_at_a_pause_are_kept() -> None:
    """Without overlap, a word repeated across the boundary is real speech and stays."""
    assert join(["no no.", "no way."], [False, False]) == "no no. no way."


def test_overlap_entirely_repeated_chunk_disappears() -> None:
    """An overlapped chunk that only repeats the previous words adds nothing."""
    assert join(["a b c d.", "c d."], [False, True]) == "a b c d."


def test_cjk_overlap_compares_characters() -> None:
    """CJK overlaps are found character by character."""
    joined = join(["今天天气很好我们", "很好我们去公园吧。"], [False, True])
    assert joined == "今天天气很好我们去公园吧。"
    assert join(["我们去公园。", "公园吧。"], [False, True]) == "我们去公园吧。"


def test_tone_words_survive_any_chunking() -> None:
    """Splitting a word sequence anywhere, with or without overlap, gives the sequence back."""
    seq = [f"tone{i % 7}x{i}" for i in range(40)]
    for cut in (5, 13, 27):
        for ov in (0, 1, 3):
            left = " ".join(seq[:cut]) + "."
            right = " ".join(seq[cut - ov :]) + "."
            assert words(join([left, right], [False, ov > 0])) == [w.lower() for w in seq]


def test_is_cjk_covers_han_kana_and_fullwidth_punctuation() -> None:
    """CJK detection covers ideographs, kana and full-width punctuation but not Latin or Hangul."""
    assert all(is_cjk(c) for c in "中文かなカナ。，！")
    assert not any(is_cjk(c) for c in "aZ9.,!한")


def test_many_chunks_mixing_pauses_and_overlaps_give_the_sequence_back() -> None:
    """A long recording in many chunks, some overlapped, joins to exactly its word sequence."""
    seq = [f"w{i}" for i in range(600)]
    texts, flags, start = [], [], 0
    for k, end in enumerate(range(45, 601, 45)):
        repeat = (k % 4) if k else 0  # 0-3 words heard again at the start of the next chunk
        texts.append(" ".join(seq[start - repeat : end]).capitalize() + ".")
        flags.append(repeat > 0)
        start = end
    texts.append(" ".join(seq[start:]) + ".")
    flags.append(False)
    assert words(join(texts, flags)) == seq
