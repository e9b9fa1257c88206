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
