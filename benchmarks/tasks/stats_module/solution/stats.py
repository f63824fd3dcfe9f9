"""Small descriptive statistics, without numpy."""

import math


class EmptyDataError(ValueError):
    """Raised when a statistic of no values is asked for."""


def _require(values):
    values = list(values)
    if not values:
        raise EmptyDataError("no values")
    return values


def mean(values):
    values = _require(values)
    return sum(values) / len(values)


def median(values):
    """The middle value; for an even count, the mean of the two middle values."""
    values = sorted(_require(values))
    n = len(values)
    mid = n // 2
    if n % 2 == 1:
        return values[mid]
    return (values[mid - 1] + values[mid]) / 2


def mode(values):
    """The most common value; ties go to the smallest."""
    values = _require(values)
    counts = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    best = max(counts.values())
    return min(v for v, c in counts.items() if c == best)


def variance(values):
    """Population variance."""
    values = _require(values)
    m = mean(values)
    return sum((v - m) ** 2 for v in values) / len(values)


def stdev(values):
    return math.sqrt(variance(values))


def value_range(values):
    values = _require(values)
    return max(values) - min(values)


def summary(values):
    """All the statistics at once, as a dict."""
    return {
        "mean": mean(values),
        "median": median(values),
        "mode": mode(values),
        "stdev": stdev(values),
        "range": value_range(values),
    }
