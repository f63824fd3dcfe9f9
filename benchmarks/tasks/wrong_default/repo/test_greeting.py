from greeting import greet


def test_default_greeting():
    assert greet("Ann") == "Hello, Ann!"


def test_custom_greeting():
    assert greet("Bob", "Hey") == "Hey, Bob!"
