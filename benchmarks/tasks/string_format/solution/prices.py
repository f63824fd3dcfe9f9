def format_price(amount):
    """A price in dollars with two decimals, like $3.50."""
    return "$%.2f" % amount
