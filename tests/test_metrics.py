"""metrics: hand-computed CER/WER cases."""

import pytest

from scripts.metrics import cer, edit_distance, wer, word_edit_distance


def test_edit_distance_counts_characters():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("Calle 26 # 68B-35", "Calle 26 # 68B-35") == 0
    assert edit_distance("Núñez", "Nunez") == 2


def test_word_edit_distance_counts_words():
    assert word_edit_distance("a b c", "a x c d") == 2  # one substitution, one insertion
    assert word_edit_distance("  hola   mundo ", "hola mundo") == 0  # whitespace runs are one separator


def test_cer_is_corpus_level_not_a_mean_of_lines():
    # Line CERs would be 2/2 and 0/4 (mean 0.5); corpus CER is 2 edits / 6 reference characters.
    assert cer(["ab", "cdef"], ["", "cdef"]) == pytest.approx(2 / 6)
    assert cer(["abcd"], ["abxd"]) == pytest.approx(0.25)
    assert cer(["a"], ["abc"]) == pytest.approx(2.0)  # insertions can push CER above 1


def test_wer_is_corpus_level():
    # 1 deletion in 3 words + 1 substitution in 2 words = 2 / 5.
    assert wer(["hola mundo cruel", "Calle 26"], ["hola mundo", "Calle 28"]) == pytest.approx(2 / 5)


def test_both_sides_are_nfc_normalised():
    decomposed = "cancio\u0301n"  # 'o' + combining acute
    assert cer(["canción"], [decomposed]) == 0.0
    assert wer([decomposed], ["canción"]) == 0.0
    assert cer(["canción"], ["cancion"]) == pytest.approx(1 / 7)


def test_empty_references_and_length_mismatch():
    assert cer([""], [""]) == 0.0
    assert cer([""], ["x"]) == 1.0
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
