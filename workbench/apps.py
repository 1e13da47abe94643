"""App config of the composition root: registers the console's and each user's realtime group."""

from django.apps import AppConfig


class WorkbenchConfig(AppConfig):
    name = "workbench"
    verbose_name = "Workbench"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported for what they register: the console's and the badge's live fragments, receivers.
        from customers.privacy import register_eraser
        from workbench import console, notifications, roles, signals  # noqa: F401
        from workbench.connectors.email_inbound import erase_attachments
        from workbench.realtime import register_group

        register_eraser("email attachments", erase_attachments)

        register_group("console", can_read=roles.can_open_console, has_id=False)
        # A person's own notifications (the nav badge): nobody else may listen.
        register_group("user", can_read=roles.is_same_user)
