from tags import add_tag


def test_fresh_list_each_call():
    assert add_tag("a") == ["a"]
    assert add_tag("b") == ["b"]


def test_given_list():
    mine = ["x"]
    assert add_tag("y", mine) == ["x", "y"]
