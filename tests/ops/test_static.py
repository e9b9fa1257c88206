"""Static files in production: hashed names, compressed, cached for a year (WhiteNoise)."""

import re

from django.core.management import call_command
from django.test import Client, override_settings

MANIFEST = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}


def test_hashed_static_files_are_served_with_long_cache_headers(tmp_path, db):
    with override_settings(STATIC_ROOT=tmp_path, STORAGES=MANIFEST):
        # given collectstatic with the production storage
        call_command("collectstatic", "--noinput", verbosity=0)
        manifest = (tmp_path / "staticfiles.json").read_text()
        hashed = re.search(r'"(css/[^"]+\.[0-9a-f]{12}\.css)"', manifest)
        assert hashed, manifest[:500]
        # when a browser asks for the hashed file
        response = Client().get(f"/static/{hashed.group(1)}", HTTP_ACCEPT_ENCODING="gzip")
        # then it comes compressed, cached for a year, never revalidated
        assert response.status_code == 200
        assert "max-age=315360000" in response["Cache-Control"]
        assert "immutable" in response["Cache-Control"]
        assert response["Content-Encoding"] == "gzip"
