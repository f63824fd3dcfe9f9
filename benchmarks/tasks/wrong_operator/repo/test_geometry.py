from geometry import area, perimeter


def test_area():
    assert area(3, 4) == 12
    assert area(1, 1) == 1


def test_perimeter():
    assert perimeter(3, 4) == 14
