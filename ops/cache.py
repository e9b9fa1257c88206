"""The cache may go away (Redis restarting, failing over) without taking requests with it.

Everything Allotment caches can be recomputed — forecasts, DRF's throttle history — so while
Redis is unreachable a read is a miss and a write is skipped, with a warning in the log, instead
of a 500. (Found by tests/proofs/test_many_processes.py: a Redis restart made approvals answer
500 from the throttle's cache read.) The throttle lets calls through while the cache is away."""

from __future__ import annotations

import functools
import logging

from django.core.cache.backends.redis import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def _tolerant(method, fallback):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except UNREACHABLE as error:
            logger.warning(
                "cache unreachable, %s skipped: %s", method.__name__, type(error).__name__
            )
            return fallback(*args, **kwargs) if callable(fallback) else fallback

    return call


def _default(key, default=None, *args, **kwargs):
    return default


class ResilientRedisCache(RedisCache):
    get = _tolerant(RedisCache.get, _default)
    get_many = _tolerant(RedisCache.get_many, {})
    has_key = _tolerant(RedisCache.has_key, False)
    set = _tolerant(RedisCache.set, None)
    set_many = _tolerant(RedisCache.set_many, lambda data, *a, **k: list(data))
    add = _tolerant(RedisCache.add, False)
    touch = _tolerant(RedisCache.touch, False)
    delete = _tolerant(RedisCache.delete, False)
    delete_many = _tolerant(RedisCache.delete_many, None)
