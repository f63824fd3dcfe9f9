def first_word(text):
    """The first word of text."""
    return text.split()[0]


def last_word(text):
    """The last word of text."""
    return text.split()[-1]


def word_count(text):
    return len(text.split())
