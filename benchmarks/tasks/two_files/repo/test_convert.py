from convert import feet_to_cm, inches_to_cm


def test_inches():
    assert inches_to_cm(10) == 25.4


def test_feet():
    assert feet_to_cm(1) == 30.48
