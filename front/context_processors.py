"""Which main-navigation section the current page belongs to, so the layout marks it as current
without JavaScript."""

SECTIONS = {
    "requests:inbox": "approvals",
    "requests": "requests",
    "allocator:ops": "ops",
    "allocator:balance": "balance",
    "allocator": "pools",
    "org": "projects",
    "notifications": "notifications",
    "overview": "overview",
}


def nav_section(request):
    match = getattr(request, "resolver_match", None)
    if match is None:
        return {"nav_section": ""}
    view_name = match.view_name
    # "allocator:ops-capacity" (a form sent back) belongs to "allocator:ops", not to "allocator"
    for prefix in (view_name, view_name.split("-", 1)[0], match.namespace):
        if prefix in SECTIONS:
            return {"nav_section": SECTIONS[prefix]}
    return {"nav_section": ""}
