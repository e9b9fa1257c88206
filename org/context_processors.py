from .roles import roles_of


def roles(request):
    return {"roles": roles_of(getattr(request, "user", None))}
