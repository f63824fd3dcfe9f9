from words import first_word, last_word, word_count


def test_first_word():
    assert first_word("the quick brown fox") == "the"


def test_last_word():
    assert last_word("the quick brown fox") == "fox"


def test_word_count():
    assert word_count("a b c") == 3
