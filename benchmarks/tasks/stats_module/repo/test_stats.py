import pytest
from stats import EmptyDataError, mean, median, mode, stdev, summary


def test_mean():
    assert mean([1, 2, 3]) == 2


def test_median_odd():
    assert median([3, 1, 2]) == 2


def test_median_even():
    assert median([4, 1, 3, 2]) == 2.5
    assert median([1, 2]) == 1.5


def test_mode():
    assert mode([1, 2, 2, 3, 3]) == 2


def test_stdev():
    assert stdev([2, 4, 4, 4, 5, 5, 7, 9]) == 2


def test_empty():
    with pytest.raises(EmptyDataError):
        mean([])


def test_summary():
    assert summary([1, 2, 3, 4])["median"] == 2.5
