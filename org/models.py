"""Who is who: divisions, teams, memberships, projects and role grants (PRODUCT.md sections 1, 2)."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower


class Division(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True, max_length=2000)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="division_name_unique_ci"),
        ]

    def __str__(self):
        return self.name


class Team(models.Model):
    division = models.ForeignKey(Division, on_delete=models.PROTECT, related_name="teams")
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="teams"
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="team_name_unique_ci"),
        ]

    def __str__(self):
        return f"{self.name} ({self.division})"


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="membership_unique"),
        ]

    def __str__(self):
        return f"{self.user} in {self.team.name}"


class Project(models.Model):
    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        WINDING_DOWN = "winding_down", "Winding down"
        ENDED = "ended", "Ended"

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="projects")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True, max_length=5000)
    expected_end = models.DateField(null=True, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.ACTIVE)
    confidential = models.BooleanField(
        default=False,
        help_text="Requests and justifications visible only to the team, its division's leads, "
        "executives and compute ops.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="project_name_unique_ci"),
            models.CheckConstraint(
                condition=Q(state__in=["active", "winding_down", "ended"]),
                name="project_state_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "expected_end"]),
            # The API list's cursor order (common/pagination.py: name, then id).
            models.Index(fields=["name", "id"], name="project_by_name"),
        ]

    def __str__(self):
        return self.name

    @property
    def division_id(self):
        return self.team.division_id


class RoleGrant(models.Model):
    """A role held by a user. Division leads hold it for one division; executive and compute ops
    are lab-wide. A person may hold several grants (PRODUCT.md section 1)."""

    class Role(models.TextChoices):
        DIVISION_LEAD = "division_lead", "Division lead"
        EXECUTIVE = "executive", "Executive"
        COMPUTE_OPS = "compute_ops", "Compute ops"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="role_grants"
    )
    role = models.CharField(max_length=20, choices=Role.choices)
    division = models.ForeignKey(
        Division, on_delete=models.CASCADE, null=True, blank=True, related_name="role_grants"
    )
    granted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(role="division_lead", division__isnull=False))
                | (Q(role__in=["executive", "compute_ops"], division__isnull=True)),
                name="rolegrant_division_only_for_leads",
            ),
            models.UniqueConstraint(
                fields=["user", "role", "division"], name="rolegrant_unique_division_role"
            ),
            models.UniqueConstraint(
                fields=["user", "role"],
                condition=Q(division__isnull=True),
                name="rolegrant_unique_global_role",
            ),
        ]

    def __str__(self):
        where = f" of {self.division}" if self.division_id else ""
        return f"{self.user} — {self.get_role_display()}{where}"
