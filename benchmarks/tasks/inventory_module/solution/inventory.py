"""A shop's stock: quantities and unit prices per item name."""

from dataclasses import dataclass


class StockError(ValueError):
    """Asked to remove more of an item than there is."""


@dataclass
class Item:
    name: str
    quantity: int
    price: float

    @property
    def value(self):
        return self.quantity * self.price


class Inventory:
    def __init__(self):
        self._items = {}

    def add(self, name, quantity, price=None):
        """Add stock; the price is needed the first time an item is added."""
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        item = self._items.get(name)
        if item is None:
            if price is None:
                raise ValueError(f"{name} is new: give its price")
            self._items[name] = Item(name, quantity, price)
        else:
            item.quantity += quantity
            if price is not None:
                item.price = price

    def remove(self, name, quantity):
        """Take stock out; an item whose quantity reaches zero is gone."""
        item = self._items.get(name)
        if item is None or item.quantity < quantity:
            raise StockError(f"not enough {name}")
        item.quantity -= quantity
        if item.quantity == 0:
            del self._items[name]

    def quantity(self, name):
        item = self._items.get(name)
        return item.quantity if item else 0

    def names(self):
        return sorted(self._items)

    def total_value(self):
        return round(sum(item.value for item in self._items.values()), 2)

    def low_stock(self, threshold=5):
        """Names of items with fewer than `threshold` units left."""
        return sorted(n for n, item in self._items.items() if item.quantity < threshold)
