"""Running I/O-bound reads and checks side by side, with results in a stable order.

Reads of hosts (SSH round-trips), name servers and sites from outside spend
their time waiting on the network: a few threads overlap the waiting. Results
come back in the order of the items given, whatever finished first.
"""

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def each(fn: Callable[[T], R], items: Iterable[T], workers: int = 8) -> list[R]:
    """fn(item) for every item, at most `workers` at a time; results in the items' order.

    The first item's error (in the items' order) is raised once all have finished,
    so no read is left running behind the caller's back.
    """
    items = list(items)
    if len(items) <= 1 or workers <= 1:
        return [fn(item) for item in items]
    outcomes = settled(fn, items, workers)
    for _result, error in outcomes:
        if error is not None:
            raise error
    return [result for result, _error in outcomes]


def settled(fn: Callable[[T], R], items: Iterable[T], workers: int = 8) -> list[tuple[R | None, Exception | None]]:
    """(result, None) or (None, error) for every item: one item's failure is its own."""
    items = list(items)

    def guarded(item):
        try:
            return fn(item), None
        except Exception as err:  # noqa: BLE001 - handed back to the caller, per item
            return None, err

    if len(items) <= 1 or workers <= 1:
        return [guarded(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(guarded, items))


def together(**reads: Callable[[], object]) -> dict[str, object]:
    """Run independent reads at once; {name: result}. The first failing read's error is raised."""
    names = list(reads)
    return dict(zip(names, each(lambda name: reads[name](), names, workers=len(names))))
