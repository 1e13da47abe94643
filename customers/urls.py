"""Customer URLs: each views module lists its own patterns; the names are the contract."""

from customers.views import imports, merge, privacy, profile

app_name = "customers"
# Names: list, detail, timeline, consent (profile); merge (merge); export, erase (privacy);
# import, import_status (imports).
urlpatterns = profile.urlpatterns + merge.urlpatterns + privacy.urlpatterns + imports.urlpatterns
