"""The test endpoints (CSRF-exempt; they exist to write real Django sessions).

POST /login   form or JSON {"user": "<username>", "roles": [...], "email": "...",
              "extra": {...}, "datetime": true}: creates the user if missing (random
              password), django.contrib.auth.login (so `_auth_user_id` is the pk as a
              string), then stores `roles`, `email` (default "<username>@example.com") and
              every entry of `extra` in the session. With `?datetime=1` (or "datetime":
              true) it also stores `last_seen = datetime.datetime.now()`.
              200 {"ok": true, "id": "<pk>"}.
POST /logout  django.contrib.auth.logout (flushes the session: deletes the key). 200.
GET  /anon    sets session["views"] without logging in: an anonymous session. 200.
GET  /whoami  {"user": <username or null>, "id": <_auth_user_id or null>, "roles", "email"}.
"""

import datetime
import json
import secrets

from django.contrib.auth import get_user_model, login, logout
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST


def _body(request):
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
    data = {k: request.POST.get(k) for k in request.POST}
    data["roles"] = request.POST.getlist("roles")
    return data


@csrf_exempt
@require_POST
def login_view(request):
    data = _body(request)
    if data is None:
        return JsonResponse({"error": "the body must be a JSON object or a form"}, status=400)
    username = data.get("user")
    if not isinstance(username, str) or username == "":
        return JsonResponse({"error": "a non-empty string `user` is required"}, status=400)
    roles = data.get("roles") or []
    if not isinstance(roles, list):
        roles = [roles]
    email = data.get("email")
    if not isinstance(email, str):
        email = f"{username}@example.com"

    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username)
    if created:
        user.email = email
        user.set_password(secrets.token_urlsafe(24))
        user.save()
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")

    request.session["roles"] = roles
    request.session["email"] = email
    extra = data.get("extra")
    if isinstance(extra, dict):
        for key, value in extra.items():
            if not key.startswith("_"):
                request.session[key] = value
    if request.GET.get("datetime") == "1" or data.get("datetime") is True:
        request.session["last_seen"] = datetime.datetime.now()
    return JsonResponse({"ok": True, "id": str(user.pk)})


@csrf_exempt
@require_POST
def logout_view(request):
    logout(request)
    return JsonResponse({"ok": True})


@require_GET
def anon_view(request):
    request.session["views"] = request.session.get("views", 0) + 1
    return JsonResponse({"ok": True, "views": request.session["views"]})


@require_GET
def whoami_view(request):
    user = request.user
    return JsonResponse(
        {
            "user": user.get_username() if user.is_authenticated else None,
            "id": request.session.get("_auth_user_id"),
            "roles": request.session.get("roles"),
            "email": request.session.get("email"),
        }
    )
