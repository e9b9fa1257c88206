"""While Redis (the cache) is unreachable, a cache read is a miss and a write is skipped:
requests still answer."""

from ops.cache import ResilientRedisCache


def _unreachable():
    return ResilientRedisCache("redis://127.0.0.1:1/0", {"OPTIONS": {}})  # nothing on port 1


def test_reads_miss_and_writes_are_skipped():
    cache = _unreachable()
    assert cache.get("k", "fallback") == "fallback"
    assert cache.get_many(["a", "b"]) == {}
    assert cache.set("k", 1) is None
    assert cache.add("k", 1) is False
    assert cache.set_many({"a": 1}) == ["a"]
    assert cache.delete("k") is False


def test_an_api_call_answers_while_the_cache_is_away(client, requester, settings):
    # given the throttled API with its cache unreachable
    settings.CACHES = {
        "default": {"BACKEND": "ops.cache.ResilientRedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    from django.core.cache import cache

    assert cache.get("anything", "miss") == "miss"  # the unreachable one
    client.force_login(requester)
    # when a researcher lists requests (throttle and forecasts read the cache)
    response = client.get("/api/v1/requests/")
    # then it answers
    assert response.status_code == 200
