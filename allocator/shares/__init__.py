"""Division shares of pools (PRODUCT.md sections 2, 3 and 5, "Balance"):

    forecasts.py  each pool's timeline (and its divisions') over a window, in Python
    summaries.py  the same figures summed in PostgreSQL, for the whole-lab pages
    cached.py     those summaries kept per pool in the cache, keyed by what changes them
    reclaim.py    the one rule: which allocations to reclaim to bring a division under its share
    balance.py    every division's share of every pool against its holding now and at its peak
    decision.py   the executive decision that sets a share
    whatif.py     what candidate shares would do, nothing saved

The share rule a request meets at submit and at apply time is allocator.selectors.share_check.
"""

from .balance import PoolBalance, ShareRow, balance, division_holdings
from .cached import cached_daily_load, cached_pool_summaries, cached_reclaim_lists, pool_marks
from .decision import MAX_SHARE_INPUT, ShareUpdate, division_share_set
from .forecasts import HeldRow, PoolForecast, pool_forecasts, summed_timeline
from .reclaim import reclaim_lists
from .summaries import PoolSummary, daily_load, pool_summaries
from .whatif import ShareWhatIf, StartChange, WhatIfRow, share_whatif

__all__ = [
    "MAX_SHARE_INPUT",
    "HeldRow",
    "PoolBalance",
    "PoolForecast",
    "PoolSummary",
    "ShareRow",
    "ShareUpdate",
    "ShareWhatIf",
    "StartChange",
    "WhatIfRow",
    "balance",
    "cached_daily_load",
    "cached_pool_summaries",
    "cached_reclaim_lists",
    "daily_load",
    "division_holdings",
    "division_share_set",
    "pool_forecasts",
    "pool_marks",
    "pool_summaries",
    "reclaim_lists",
    "share_whatif",
    "summed_timeline",
]
