"""App config: registers the campaign realtime group (marketing and the CCO read it) and the
listener that re-checks a customer's waiting touches when service changes their marketing state."""

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CampaignsConfig(AppConfig):
    name = "campaigns"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from workbench import realtime, roles

        realtime.register_group("campaign", can_read=roles.can_read_campaigns)

        from campaigns.policy import on_marketing_state_changed
        from cases.holds import register_marketing_state_listener

        register_marketing_state_listener(on_marketing_state_changed)

        # The campaign page's live progress, and "Marketing for this customer" on the case view
        # and the customer page (customers knows only its panel registry).
        from campaigns import fragments
        from customers.panels import register_panel

        register_panel("marketing", fragments.render_customer_panel)

        post_migrate.connect(
            _ensure_first_policy, sender=self, dispatch_uid="campaigns.ensure_first_policy"
        )


def _ensure_first_policy(sender, using="default", **kwargs) -> None:
    from campaigns.policy import ensure_first_policy

    ensure_first_policy(using=using)
