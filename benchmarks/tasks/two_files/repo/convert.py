from units import CM_PER_FOOT, CM_PER_INCH


def inches_to_cm(inches):
    return round(inches * CM_PER_INCH, 2)


def feet_to_cm(feet):
    return round(feet * CM_PER_FOOT, 2)
