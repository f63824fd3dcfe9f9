"""Conversion factors."""

CM_PER_INCH = 2.45
CM_PER_FOOT = 30.48
