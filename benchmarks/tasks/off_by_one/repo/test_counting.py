from counting import count_down, count_up


def test_count_up():
    assert count_up(3) == [1, 2, 3]
    assert count_up(1) == [1]


def test_count_down():
    assert count_down(3) == [3, 2, 1]
