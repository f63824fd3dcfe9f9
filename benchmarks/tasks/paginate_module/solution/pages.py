"""Split a list of results into pages, as a web listing does."""

from dataclasses import dataclass


@dataclass
class Page:
    number: int  # 1-based
    items: list
    total_pages: int

    @property
    def has_next(self):
        return self.number < self.total_pages

    @property
    def has_previous(self):
        return self.number > 1


def page_count(n_items, per_page):
    """How many pages n_items need at per_page items each (at least one page)."""
    if per_page <= 0:
        raise ValueError("per_page must be positive")
    if n_items == 0:
        return 1
    return (n_items + per_page - 1) // per_page


def get_page(items, number, per_page=10):
    """Page `number` (1-based) of items; out-of-range numbers are clamped."""
    total = page_count(len(items), per_page)
    number = max(1, min(number, total))
    start = (number - 1) * per_page
    return Page(number, items[start:start + per_page], total)


def page_links(page, window=2):
    """Page numbers to show as links around the current page."""
    low = max(1, page.number - window)
    high = min(page.total_pages, page.number + window)
    return list(range(low, high + 1))
