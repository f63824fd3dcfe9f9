from pages import get_page, page_count, page_links


def test_page_count():
    assert page_count(10, 5) == 2
    assert page_count(11, 5) == 3
    assert page_count(0, 5) == 1


def test_last_page():
    page = get_page(list(range(11)), 3, per_page=5)
    assert page.items == [10]
    assert not page.has_next


def test_links():
    page = get_page(list(range(100)), 5, per_page=10)
    assert page_links(page) == [3, 4, 5, 6, 7]
