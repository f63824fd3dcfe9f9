import mathutil


def summary(values):
    return f"total={mathutil.total(values)} max={mathutil.largest(values)}"
