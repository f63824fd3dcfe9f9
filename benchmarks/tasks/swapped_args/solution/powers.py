def power(base, exponent):
    result = 1
    for _ in range(exponent):
        result *= base
    return result


def square(x):
    return power(x, 2)


def cube(x):
    return power(x, 3)
