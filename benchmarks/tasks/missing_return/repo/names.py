def normalize(name):
    """Trim surrounding spaces and lower-case the name."""
    cleaned = name.strip().lower()


def initials(name):
    return "".join(part[0].upper() for part in name.split())
