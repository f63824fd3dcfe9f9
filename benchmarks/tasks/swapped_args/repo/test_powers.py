from powers import cube, power, square


def test_power():
    assert power(2, 10) == 1024


def test_square():
    assert square(5) == 25
    assert square(3) == 9


def test_cube():
    assert cube(2) == 8
