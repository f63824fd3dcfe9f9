from names import initials, normalize


def test_normalize():
    assert normalize("  Ada Lovelace ") == "ada lovelace"


def test_initials():
    assert initials("ada lovelace") == "AL"
