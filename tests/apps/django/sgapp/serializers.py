"""The session serializer of the database copy (cached_db only; the cache engine stores
the session dict itself, pickled by the cache backend)."""

import json

from django.core.serializers.json import DjangoJSONEncoder


class JSONSerializer:
    """Django's JSONSerializer, but a datetime becomes its ISO text instead of an error."""

    def dumps(self, obj):
        return json.dumps(obj, separators=(",", ":"), cls=DjangoJSONEncoder).encode("latin-1")

    def loads(self, data):
        return json.loads(data.decode("latin-1"))
