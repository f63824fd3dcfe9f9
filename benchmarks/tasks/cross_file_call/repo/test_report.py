import mathutil
from report import summary


def test_summary():
    assert summary([1, 2, 3]) == "total=6 max=3"


def test_largest():
    assert mathutil.largest([4, 9, 2]) == 9
