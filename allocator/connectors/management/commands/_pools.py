from django.core.management.base import CommandError

from allocator.models import Pool


def pool_by_name(name: str) -> Pool:
    """POOL as in the API's `name`: `cluster/gpu_model`, e.g. east/H100 (case-insensitive)."""
    cluster, sep, model = name.partition("/")
    pool = (
        Pool.objects.filter(cluster__iexact=cluster, gpu_model__iexact=model).first()
        if sep
        else None
    )
    if pool is None:
        known = ", ".join(p.name for p in Pool.objects.all()[:20]) or "none"
        raise CommandError(f"No pool named {name!r} (pools: {known}).")
    return pool
