from prices import format_price


def test_two_decimals():
    assert format_price(3.5) == "$3.50"
    assert format_price(10) == "$10.00"
