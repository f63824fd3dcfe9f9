from voting import can_vote


def test_adults_vote():
    assert can_vote(30)
    assert can_vote(18)


def test_children_do_not():
    assert not can_vote(17)
