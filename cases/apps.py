"""App config: the case and queue realtime groups, and the counts cases adds to customer pages."""

from django.apps import AppConfig


class CasesConfig(AppConfig):
    name = "cases"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from cases import access, fragments, queries  # noqa: F401  (fragments: the live swaps)
        from customers.summary import register_summary
        from workbench import realtime

        # Object-level: only who may read that case, or whose team that queue is, may listen.
        realtime.register_group("case", can_read=access.may_join_case_group)
        realtime.register_group("queue", can_read=access.may_join_queue_group)
        register_summary("Open cases", lambda pk: queries.open_cases_for([pk]).count())
        register_summary("Open commitments", lambda pk: queries.open_commitments_for([pk]).count())
