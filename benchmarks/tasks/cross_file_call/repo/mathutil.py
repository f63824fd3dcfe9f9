def total(values):
    return sum(values)


def largest(values):
    return max(values)
