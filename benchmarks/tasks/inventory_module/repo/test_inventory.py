import pytest
from inventory import Inventory, StockError


def make():
    inv = Inventory()
    inv.add("apple", 10, 0.5)
    inv.add("pear", 3, 1.0)
    return inv


def test_add_and_value():
    inv = make()
    inv.add("apple", 2)
    assert inv.quantity("apple") == 12
    assert inv.total_value() == 9.0


def test_remove_to_zero_drops_item():
    inv = make()
    inv.remove("pear", 3)
    assert inv.names() == ["apple"]
    assert inv.low_stock() == []


def test_remove_too_much():
    inv = make()
    with pytest.raises(StockError):
        inv.remove("pear", 4)


def test_low_stock():
    assert make().low_stock() == ["pear"]
