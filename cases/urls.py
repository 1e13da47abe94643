from django.urls import path

from cases import views, views_macros, views_merge

app_name = "cases"
urlpatterns = [
    path("", views.queue, name="queue"),
    path("take-next/", views.take_next, name="take_next"),
    path("macros/", views_macros.macro_list, name="macros"),
    path("macros/new/", views_macros.macro_create, name="macro_create"),
    path("macros/<int:macro_pk>/edit/", views_macros.macro_edit, name="macro_edit"),
    path(
        "macros/<int:macro_pk>/deactivate/", views_macros.macro_deactivate, name="macro_deactivate"
    ),
    path(
        "macros/<int:macro_pk>/reactivate/", views_macros.macro_reactivate, name="macro_reactivate"
    ),
    path("<int:pk>/macros/<int:macro_pk>/render/", views_macros.macro_render, name="macro_render"),
    path("<int:pk>/", views.case_detail, name="detail"),
    path("<int:pk>/header/", views.case_header, name="header"),
    path("<int:pk>/status/", views.case_status, name="status"),
    path("<int:pk>/assign/", views.case_assign, name="assign"),
    path("<int:pk>/note/", views.case_note, name="note"),
    path("<int:pk>/compose/", views.case_compose, name="compose"),
    path("<int:pk>/commitments/", views.case_commitment, name="commitment"),
    path(
        "<int:pk>/commitments/<int:commitment_pk>/<str:outcome>/",
        views.commitment_resolve,
        name="commitment_resolve",
    ),
    path("<int:pk>/pause-marketing/", views.case_pause_marketing, name="pause_marketing"),
    path("<int:pk>/merge/", views_merge.merge, name="merge"),
]
