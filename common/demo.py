"""The demo lab of PRODUCT.md section 7. Idempotent: every row is found by its natural key, so
loading twice gives the same data. Sign-in users (password `demo`) exist only here."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from allocator.models import CapacityChange, DivisionShare, Pool
from org.models import Division, Membership, Project, RoleGrant, Team

DEMO_PASSWORD = "demo"

DIVISIONS = [("Research", "research", 0.60), ("Applications", "applications", 0.40)]

POOLS = [("east", "H100", 1024), ("west", "H200", 512), ("central", "A100", 256)]

# (team name, slug, division slug)
TEAMS = [
    ("Pretraining", "pretraining", "research"),
    ("Alignment", "alignment", "research"),
    ("Interpretability", "interpretability", "research"),
    ("Assistant", "assistant", "applications"),
    ("Search", "search", "applications"),
]

# (project, team slug, days until expected end or None, state, confidential, description)
PROJECTS = [
    ("Atlas", "pretraining", 120, "active", False, "Next frontier pretraining run."),
    ("Borealis", "pretraining", 6, "winding_down", False, "Ablations for the last run; ending."),
    ("Compass", "alignment", 60, "active", False, "Reward modelling at scale."),
    ("Dusk", "alignment", 20, "winding_down", True, "Red-teaming study (confidential)."),
    ("Ember", "interpretability", 200, "active", False, "Sparse autoencoders on large models."),
    ("Fjord", "assistant", 90, "active", False, "Assistant fine-tuning and evals."),
    ("Geyser", "assistant", 12, "winding_down", False, "Latency experiments, wrapping up."),
    ("Harbor", "search", 150, "active", False, "Retrieval model training."),
]

# (username, first, last, team slugs, grants as (role, division slug or None), superuser)
USERS = [
    ("rita", "Rita", "Researcher", ["pretraining", "alignment"], [], False),
    ("paul", "Paul", "Product", ["assistant", "search"], [], False),
    ("rlead", "Rosa", "Lead", [], [("division_lead", "research")], False),
    ("alead", "Arun", "Lead", [], [("division_lead", "applications")], False),
    ("exec", "Eve", "Executive", [], [("executive", None)], False),
    ("ops", "Otto", "Ops", [], [("compute_ops", None)], False),
    ("admin", "Ada", "Admin", [], [], True),
]


@transaction.atomic
def load_demo() -> dict:
    now = timezone.now()
    # Anchor scheduled times to the day so a second load finds the same rows.
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    epoch = today - timedelta(days=365)

    divisions = {}
    for name, slug, _ in DIVISIONS:
        divisions[slug], _ = Division.objects.update_or_create(slug=slug, defaults={"name": name})

    pools = {}
    for cluster, model, capacity in POOLS:
        pool, _ = Pool.objects.get_or_create(cluster=cluster, gpu_model=model)
        pools[pool.name] = pool
        if not pool.capacity_changes.exists():
            CapacityChange.objects.create(
                pool=pool,
                kind="arrival",
                delta=capacity,
                effective_at=epoch,
                note="Initial installation",
            )
        for slug, share in [(s, f) for _, s, f in DIVISIONS]:
            DivisionShare.objects.update_or_create(
                division=divisions[slug], pool=pool, defaults={"gpus": int(capacity * share)}
            )
    # A future arrival: new H200s land in three weeks.
    west = pools["west/H200"]
    if not west.capacity_changes.filter(note="Demo: second H200 hall").exists():
        CapacityChange.objects.create(
            pool=west,
            kind="arrival",
            delta=256,
            effective_at=today + timedelta(days=21),
            note="Demo: second H200 hall",
        )

    teams = {}
    for name, slug, division in TEAMS:
        teams[slug], _ = Team.objects.update_or_create(
            slug=slug, defaults={"name": name, "division": divisions[division]}
        )

    projects = {}
    for name, team, days, state, confidential, description in PROJECTS:
        projects[name], _ = Project.objects.update_or_create(
            name=name,
            defaults={
                "team": teams[team],
                "expected_end": (today + timedelta(days=days)).date() if days else None,
                "state": state,
                "confidential": confidential,
                "description": description,
            },
        )

    User = get_user_model()
    users = {}
    for username, first, last, team_slugs, grants, superuser in USERS:
        user, created = User.objects.get_or_create(
            username=username,
            defaults={"first_name": first, "last_name": last, "email": f"{username}@demo.invalid"},
        )
        if created or not user.check_password(DEMO_PASSWORD):
            user.set_password(DEMO_PASSWORD)
        user.is_staff = user.is_superuser = superuser
        user.save()
        users[username] = user
        for slug in team_slugs:
            Membership.objects.get_or_create(team=teams[slug], user=user)
        for role, division in grants:
            RoleGrant.objects.get_or_create(
                user=user, role=role, division=divisions[division] if division else None
            )

    return {
        "divisions": divisions,
        "pools": pools,
        "teams": teams,
        "projects": projects,
        "users": users,
        "today": today,
    }
