"""Marketing's pages, under /campaigns/."""

from django.urls import path

from campaigns import views

app_name = "campaigns"
urlpatterns = [
    path("", views.campaign_list, name="list"),
    path("new/", views.campaign_new, name="new"),
    path("preview/", views.campaign_preview, name="preview"),
    path("<int:pk>/", views.campaign_detail, name="detail"),
    path("<int:pk>/edit/", views.campaign_edit, name="edit"),
    path("<int:pk>/progress/", views.campaign_progress, name="progress"),
    path("<int:pk>/preflight/", views.campaign_preflight, name="preflight"),
    path(
        "<int:pk>/preflight/<slug:outcome>/",
        views.preflight_customers,
        name="preflight_customers",
    ),
    path("<int:pk>/overrides/", views.override_request, name="override_request"),
    path("<int:pk>/<slug:action>/", views.campaign_action, name="action"),
    path("segments/", views.segment_list, name="segments"),
    path("segments/new/", views.segment_new, name="segment_new"),
    path("segments/builder/", views.segment_builder, name="segment_builder"),
    path("segments/count/", views.segment_count_view, name="segment_count"),
    path("segments/<int:pk>/", views.segment_detail, name="segment"),
]
