"""When will each approved request get its GPUs? A simulator of a pool's future (issue 8):

    state.py                PoolState: a pool's rows as plain objects, loaded in six queries
    simulation.py           the simulation, by the engine's own rules (its docstring argues why)
    stored.py               the forecast stored per pool (StoredForecast), for pages and the API
    reclaim_suggestions.py  least-harm reclaims that would let an urgent request start
    words.py                the words instants, durations and projects are written in

A what-if is a copy of a PoolState (PoolState.with_changes) simulated like any other.
"""

from .reclaim_suggestions import ReclaimStep, ReclaimSuggestion, reclaim_suggestions
from .simulation import ASSUMPTIONS, Forecast, ForecastOutcome, forecast_pools, simulate
from .state import PoolState, SimAllocation, SimChange, SimReclaim, load_pools, read_rows
from .stored import outcomes_for_pools, refresh, refresh_stale, tokens
from .words import duration_words, project_label, when

__all__ = [
    "ASSUMPTIONS",
    "Forecast",
    "ForecastOutcome",
    "PoolState",
    "ReclaimStep",
    "ReclaimSuggestion",
    "SimAllocation",
    "SimChange",
    "SimReclaim",
    "duration_words",
    "forecast_pools",
    "load_pools",
    "outcomes_for_pools",
    "project_label",
    "read_rows",
    "reclaim_suggestions",
    "refresh",
    "refresh_stale",
    "simulate",
    "tokens",
    "when",
]
