"""The API lists page by page: the first and the last page of each list, and the full walk of the
allocations, in-process through the test Client as the executive (like bench/pages.py).

The walk follows each answer's `next` link until there is none, so it works with page-number and
cursor (keyset) pagination alike: the last page is wherever `next` stops. Every list is walked at
`page_size` (1,000 asked; the server may cap it, and `per_page` records what it served) to find
its last page; the first and last pages are then timed at that size. The allocations walk is
timed whole (time and queries) against one page of the same size.
"""

from __future__ import annotations

import time
import traceback
from urllib.parse import urlsplit

from django.db import connection
from django.test.utils import CaptureQueriesContext

from .pages import _client, _measure, personas
from .stats import ratio

LISTS = ("requests", "pools", "allocations", "capacity-changes", "divisions", "projects", "audit")
WALKED = "allocations"  # the list whose full walk has a target
ACCEPT = {"HTTP_ACCEPT": "application/json"}


def _local(url: str) -> str:
    """`next` is an absolute URL (http://testserver/api/...): the test Client wants the path."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def walk(client, first: str, *, max_pages: int, max_seconds: float = 1e9) -> dict:
    """GET `first`, then every `next` until there is none (giving up after `max_pages` pages or
    `max_seconds`). Returns the last page's path, the pages, rows and distinct ids seen, the
    seconds and the queries it took."""
    path, pages, rows, ids = first, 0, 0, set()
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as captured:
        while True:
            response = client.get(path, **ACCEPT)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code} on {path}")
            pages += 1
            data = response.json()
            if isinstance(data, list):  # an unpaginated list is its own last page
                results, following = data, None
            else:
                results, following = data.get("results", []), data.get("next")
            rows += len(results)
            ids.update(r.get("id") for r in results if isinstance(r, dict))
            if not following:
                break
            if pages >= max_pages:
                raise RuntimeError(f"no last page within {max_pages} pages ({rows} rows)")
            if time.perf_counter() - started > max_seconds:
                raise RuntimeError(
                    f"no last page within {max_seconds:g} s ({pages} pages, {rows} rows)"
                )
            path = _local(following)
    return {
        "last_path": path,
        "pages": pages,
        "rows": rows,
        "distinct": len(ids - {None}),  # rows a walk saw twice (or without an id) count once
        "seconds": time.perf_counter() - started,
        "queries": len(captured.captured_queries),
    }


def run(
    *, page_size: int, repeats: int, warmup: int, max_pages: int, max_seconds: float, log
) -> list[dict]:
    client = _client(personas()["exec"])
    rows = []
    for name in LISTS:
        first = f"/api/v1/{name}/?page_size={page_size}"
        row: dict = {"name": f"API {name}", "path": first, "page_size": page_size}
        try:
            head = client.get(first, **ACCEPT)
            data = head.json() if head.status_code == 200 else None
            if data is None:
                raise RuntimeError(f"HTTP {head.status_code} on {first}")
            results = data if isinstance(data, list) else data.get("results", [])
            row["per_page"] = len(results)
            found = walk(client, first, max_pages=max_pages, max_seconds=max_seconds)
            row.update(
                last_path=found["last_path"],
                pages=found["pages"],
                rows=found["rows"],
                distinct=found["distinct"],
                walk_seconds=found["seconds"],
                walk_queries=found["queries"],
            )
            row["first"] = _measure(client, first, repeats=repeats, warmup=warmup)
            row["last"] = _measure(client, found["last_path"], repeats=repeats, warmup=warmup)
            for key in ("first", "last"):
                if "error" in row[key]:
                    raise RuntimeError(f"{key} page: {row[key]['error']}")
            row["last_ratio"] = ratio(row["last"]["median_ms"], row["first"]["median_ms"])
            # The whole walk against one page of the same size (the first, timed above).
            row["walk_ratio"] = ratio(found["seconds"] * 1000, row["first"]["median_ms"])
            log(
                f"{row['name']}: first {row['first']['median_ms']:.1f} ms, last "
                f"{row['last']['median_ms']:.1f} ms (x{row['last_ratio']:.2f}); walk of "
                f"{found['rows']} rows in {found['pages']} pages: {found['seconds']:.2f} s, "
                f"{found['queries']} queries"
            )
        except Exception as exc:  # a broken list is a row in the table, not the end of the run
            row["error"] = traceback.format_exception_only(type(exc), exc)[-1].strip()[:300]
            log(f"{row['name']}: ERROR {row['error']}")
        rows.append(row)
    client.logout()
    return rows
