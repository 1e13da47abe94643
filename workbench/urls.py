"""Every URL of Workbench: each app's pages under its own prefix, the API, auth, health."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from workbench import chat_settings, console, health, mail, notification_pages, views
from workbench.connectors import email_views, meta_views, x_views
from workbench.console import reports

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("no-role/", views.no_role, name="no-role"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # An invited user's one-time link to set a password (workbench.console.people).
    path(
        "accounts/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "accounts/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("console/chat/", chat_settings.urls),
    path("console/", console.urls),
    path("chat/demo/", chat_settings.chat_demo, name="chat_demo"),
    path("reports/", reports.urls),
    path("notifications/", notification_pages.urls),
    path("outbox/", mail.outbox, name="outbox"),
    path("inbound/email/", include(email_views.urlpatterns)),
    path(
        "email/attachments/<int:interaction_id>/<int:index>/",
        email_views.attachment,
        name="email-attachment",
    ),
    path("cases/", include("cases.urls")),
    path("customers/", include("customers.urls")),
    path("campaigns/", include("campaigns.urls")),
    path("api/me/", views.me, name="api-me"),
    path("api/customers/", include("customers.api")),
    path("api/cases/", include("cases.api")),
    path("api/cases/", include("cases.api_replies")),
    path("api/campaigns/", include("campaigns.api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("inbound/meta/", meta_views.webhook, name="inbound-meta"),
    path("inbound/x/", x_views.webhook, name="inbound-x"),
    path("admin/", admin.site.urls),
]
