"""Framework hooks only: sign-ins go to the audit log (and live to the console); role groups
survive a database flush."""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import post_migrate
from django.dispatch import receiver

from workbench import realtime, roles
from workbench.audit import record_audit
from workbench.console import SIGN_IN


@receiver(user_logged_in, dispatch_uid="workbench.audit_sign_in")
def audit_sign_in(sender, request, user, **kwargs) -> None:
    ip = request.META.get("REMOTE_ADDR") if request is not None else None
    record_audit(actor=user, action=SIGN_IN, target=user, ip_address=ip or None)
    realtime.publish(realtime.group_name("console"), "console.sign_ins")


@receiver(post_migrate, dispatch_uid="workbench.ensure_role_groups")
def ensure_role_groups(sender, app_config=None, using="default", **kwargs) -> None:
    """The data migration creates the role groups; a database flush (tests) removes them and
    then sends post_migrate, so they are made again here."""
    if app_config is None or app_config.name != "workbench":
        return
    for name in roles.ROLES:
        Group.objects.using(using).get_or_create(name=name)
