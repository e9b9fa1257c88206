"""Who signed in through the lab's identity provider (PRODUCT.md section 9)."""

from django.conf import settings
from django.db import models


class OidcIdentity(models.Model):
    """The IdP's stable name for a person (issuer + `sub`), linked to their Allotment user. A
    username or e-mail can be reused or changed at the IdP; `sub` cannot."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identities"
    )
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "OIDC identity"
        verbose_name_plural = "OIDC identities"
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="oidc_identity_unique"),
        ]

    def __str__(self):
        return f"{self.user} ({self.subject} at {self.issuer})"


class DelegationQuerySet(models.QuerySet):
    def active(self, at=None):
        """In force at `at` (now): begun, not yet ended. Delegations end by themselves: nothing
        has to run at their end time."""
        from django.utils import timezone

        at = at or timezone.now()
        return self.filter(starts_at__lte=at, ends_at__gt=at, revoked_at__isnull=True)


class Delegation(models.Model):
    """A division lead or an executive names a delegate for a time range (out of office): the
    delegate decides *their* stage on their behalf. Only that stage: a lead's delegate decides
    the division review of that lead's division, an executive's the executive review."""

    class Role(models.TextChoices):
        DIVISION_LEAD = "division_lead", "Division lead"
        EXECUTIVE = "executive", "Executive"

    delegator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="delegations_given"
    )
    delegate = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="delegations_received"
    )
    role = models.CharField(max_length=20, choices=Role.choices)
    division = models.ForeignKey(
        "org.Division", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    # Ended early by the delegator (or cancelled before it began); the row stays, as history.
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DelegationQuerySet.as_manager()

    class Meta:
        ordering = ["starts_at", "id"]
        indexes = [models.Index(fields=["delegate", "ends_at"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ends_at__gt=models.F("starts_at")),
                name="delegation_ends_after_start",
            ),
            models.CheckConstraint(
                condition=~models.Q(delegator=models.F("delegate")),
                name="delegation_not_to_oneself",
            ),
            models.CheckConstraint(
                condition=(models.Q(role="division_lead", division__isnull=False))
                | models.Q(role="executive", division__isnull=True),
                name="delegation_division_only_for_leads",
            ),
        ]

    def __str__(self):
        what = f"{self.get_role_display()} of {self.division}" if self.division_id else "Executive"
        return f"{self.delegate} for {self.delegator} ({what})"
