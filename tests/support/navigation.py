"""Follow a list page's "older / next" links as a person clicks them (common/listing.py)."""

import html
import re

NEXT = re.compile(r'<a class="button" rel="next" href="\?([^"]*)"')


def next_query(page: str, param: str | None = None) -> str | None:
    """The query string of the page's "older" (rel=next) link — the one that sets `param`,
    when given — or None at the end."""
    for match in NEXT.finditer(page):
        query = html.unescape(match.group(1))
        if param is None or re.search(rf"(^|&){param}=", query):
            return query
    return None


def walk(client, url: str, rows, *, param: str | None = None, first: str = "") -> list:
    """Every page from `url?first` on, following "older" to the end: `rows(response)` gives the
    ids each page shows; returns them all, in order."""
    seen, query = [], first
    for _ in range(1000):
        response = client.get(f"{url}?{query}" if query else url)
        assert response.status_code == 200
        seen.extend(rows(response))
        query = next_query(response.content.decode(), param)
        if query is None:
            return seen
    raise AssertionError("the list never ended")
