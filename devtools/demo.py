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
USERS: list[tuple[str, str, str, list[str], list[tuple[str, str | None]], bool]] = [
    ("rita", "Rita", "Researcher", ["pretraining", "alignment"], [], False),
    ("paul", "Paul", "Product", ["assistant", "search"], [], False),
    # rlead also researches on Alignment, so separation of duties shows: she files requests
    # there and cannot decide their division stage.
    ("rlead", "Rosa", "Lead", ["alignment"], [("division_lead", "research")], False),
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
        for role, division_slug in grants:
            RoleGrant.objects.get_or_create(
                user=user, role=role, division=divisions[division_slug] if division_slug else None
            )

    return {
        "divisions": divisions,
        "pools": pools,
        "teams": teams,
        "projects": projects,
        "users": users,
        "today": today,
    }


# --- Requests in every state, made through the real services (PRODUCT.md section 7) -----------

DEMO_TAG = "[demo]"


def _justification(goal: str) -> dict:
    return {
        "goal": f"{DEMO_TAG} {goal}",
        "expected_outcome": "A milestone the division tracks this quarter.",
        "size_rationale": "Sized from the last comparable run; less would not converge in time.",
        "impact_if_denied": "The milestone slips by about a month.",
    }


def load_demo_requests(data: dict) -> list[str]:
    """File and move demo requests through the workflow and the apply engine, one per state.
    Idempotent: a request whose goal carries its tag is not filed again. Runs outside any outer
    transaction, because the apply engine opens durable transactions of its own."""
    from django.conf import settings

    from allocator.models import AllocationChange
    from allocator.services import allocation_change_apply, allocation_change_record_error
    from requests_app.models import ComputeRequest
    from requests_app.services import (
        request_create,
        request_decide,
        request_submit,
        request_withdraw,
    )

    users, projects, pools, today = data["users"], data["projects"], data["pools"], data["today"]
    start = today + timedelta(days=2, hours=9)
    # Allocated demo requests start a minute from now, so the overview shows GPUs in use.
    soon = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    made = []

    def file(tag, who, project, pool, gpus, days, **extra):
        goal = f"{tag}: {extra.pop('goal')}"
        when = extra.pop("start", start)
        existing = ComputeRequest.objects.filter(goal=f"{DEMO_TAG} {goal}").first()
        if existing is not None:
            return None
        req = request_create(
            user=users[who],
            data={
                "project": projects[project].pk,
                "pool": pools[pool].pk,
                "gpus": gpus,
                "start": when,
                "end": when + timedelta(days=days),
                "kind": "new",
                "priority": extra.pop("priority", "normal"),
                "flexible_start": extra.pop("flexible_start", False),
                **_justification(goal),
            },
        )
        made.append(tag)
        return req

    def decide(req, who, action, comment=""):
        return request_decide(user=users[who], request_id=req.pk, action=action, comment=comment)

    def apply(req):
        req.refresh_from_db()
        allocation_change_apply(change_id=req.change_id)

    # allocated: Applications fine-tunes on central/A100, approved by its lead.
    if req := file(
        "allocated",
        "paul",
        "Fjord",
        "central/A100",
        64,
        30,
        goal="Assistant fine-tuning round 7",
        start=soon,
    ):
        request_submit(user=users["paul"], request_id=req.pk)
        decide(req, "alead", "approve", "Within our share; go ahead.")
        apply(req)
    # allocated, large: Research pretraining on east/H100.
    if req := file(
        "allocated-large",
        "rita",
        "Atlas",
        "east/H100",
        512,
        45,
        goal="Atlas pretraining, stage 2",
        start=soon,
    ):
        request_submit(user=users["rita"], request_id=req.pk)
        decide(req, "rlead", "approve", "Core roadmap.")
        decide(req, "exec", "approve", "Approved at the weekly compute review.")
        apply(req)
    # allocated, ending soon: a winding-down project's last GPUs (shows in the ops console).
    if req := file(
        "ending-soon",
        "rita",
        "Borealis",
        "east/H100",
        64,
        5,
        goal="Final Borealis ablations",
        start=soon,
    ):
        request_submit(user=users["rita"], request_id=req.pk)
        decide(req, "rlead", "approve", "Last one for Borealis.")
        apply(req)
    # waiting: needs more of central/A100 than is free over its range, no later start accepted.
    if req := file(
        "waiting", "rita", "Compass", "central/A100", 200, 20, goal="Reward-model sweep on A100s"
    ):
        request_submit(user=users["rita"], request_id=req.pk)
        decide(req, "rlead", "approve", "Worth it.")
        decide(req, "exec", "approve", "Above the share, accepted for this sweep.")
        apply(req)
    # The queue at work on central/A100 (PRODUCT.md section 4, work conservation): the 200
    # above cannot be placed on record (only 192 are free over its period), so it holds
    # nothing, and small requests behind it are allocated at once from the idle GPUs.
    if req := file(
        "served-beside-8", "rita", "Atlas", "central/A100", 8, 10, goal="Tokenizer ablation"
    ):
        request_submit(user=users["rita"], request_id=req.pk)
        decide(req, "rlead", "approve", "Small; the A100s are idle.")
        apply(req)
    if req := file(
        "served-beside-16", "paul", "Harbor", "central/A100", 16, 14, goal="Reranker training"
    ):
        request_submit(user=users["paul"], request_id=req.pk)
        decide(req, "alead", "approve", "Fits beside the big sweep.")
        apply(req)
    # waiting, served late: a fixed start 12 days out for 24 days; at most 192 GPUs are free
    # until then, and 196 only when the 64-GPU Fjord allocation ends (day 30): served then, 18 days late, it
    # would get 6 of its 24 days, and its page, notice and forecast say so in numbers.
    if req := file(
        "waiting-late",
        "rita",
        "Compass",
        "central/A100",
        196,
        24,
        goal="Reward-model distillation",
        start=soon + timedelta(days=30 - 18),  # Fjord's 64 GPUs end at soon + 30 days
    ):
        request_submit(user=users["rita"], request_id=req.pk)
        decide(req, "rlead", "approve", "Needed for the distillation milestone.")
        decide(req, "exec", "approve", "Accepted above the share for this milestone.")
        apply(req)
    # pending_executive: 300 GPUs needs executive review after the lead's approval.
    if req := file(
        "pending-executive", "rita", "Compass", "west/H200", 300, 21, goal="Reward model at scale"
    ):
        request_submit(user=users["rita"], request_id=req.pk)
        decide(req, "rlead", "approve", "Strong case; needs exec sign-off for the size.")
    # pending_division: waiting for the Applications lead.
    if req := file(
        "pending-division", "paul", "Harbor", "west/H200", 32, 14, goal="Retriever distillation"
    ):
        request_submit(user=users["paul"], request_id=req.pk)
    # changes_requested
    if req := file(
        "changes-requested",
        "rita",
        "Compass",
        "east/H100",
        128,
        10,
        goal="Preference data ablations",
    ):
        request_submit(user=users["rita"], request_id=req.pk)
        decide(req, "rlead", "request_changes", "Please split the ablations into two smaller runs.")
    # rejected
    if req := file(
        "rejected", "rita", "Borealis", "east/H100", 64, 30, goal="More ablations for the last run"
    ):
        request_submit(user=users["rita"], request_id=req.pk)
        decide(req, "rlead", "reject", "Borealis is winding down; fold this into Atlas.")
    # withdrawn
    if req := file(
        "withdrawn", "paul", "Geyser", "central/A100", 16, 7, goal="Latency experiments"
    ):
        request_submit(user=users["paul"], request_id=req.pk)
        request_withdraw(user=users["paul"], request_id=req.pk, comment="Done on CPU instead.")
    # draft
    file(
        "draft",
        "rita",
        "Atlas",
        "west/H200",
        64,
        14,
        goal="Long-context evals",
        flexible_start=True,
    )
    # failed: the apply raised until the attempts ran out (here: an error we record by hand).
    if req := file("failed", "paul", "Fjord", "west/H200", 16, 5, goal="Eval harness smoke run"):
        request_submit(user=users["paul"], request_id=req.pk)
        decide(req, "alead", "approve")
        req.refresh_from_db()
        AllocationChange.objects.filter(pk=req.change_id).update(
            attempts=settings.ALLOTMENT["MAX_APPLY_ATTEMPTS"]
        )
        allocation_change_record_error(
            change_id=req.change_id, error="demo: scheduler API of west unreachable"
        )
    # approved: left for the worker to take when `dev.py run` starts it.
    if req := file("approved", "paul", "Harbor", "central/A100", 8, 3, goal="Index rebuild"):
        request_submit(user=users["paul"], request_id=req.pk)
        decide(req, "alead", "approve")
    return made
