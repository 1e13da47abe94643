"""App config: registers the customer's realtime group (everyone with a role reads customers)."""

from django.apps import AppConfig


class CustomersConfig(AppConfig):
    name = "customers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Both register live fragments (and importing its `import` group) at startup.
        from customers import fragments, importing  # noqa: F401
        from workbench import realtime, roles

        realtime.register_group("customer", can_read=roles.can_read_customers)
