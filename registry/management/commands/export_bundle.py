from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from controlplane.errors import DomainError
from registry.bundles import bundle_export
from registry.selectors import app_get


class Command(BaseCommand):
    help = (
        "Write an app's bundle manifest and baseline model files into a folder, verified by "
        "sha256, for a per-customer SDK build."
    )

    def add_arguments(self, parser):
        parser.add_argument("app_id")
        parser.add_argument("folder", type=Path)
        parser.add_argument(
            "--base-url",
            default="",
            help="Scheme and host of this server, for model URLs when no CDN is configured.",
        )

    def handle(self, *args, app_id, folder, base_url, **options):
        try:
            app = app_get(app_id=app_id)
            manifest = bundle_export(app=app, folder=folder, base_url=base_url)
        except DomainError as error:
            raise CommandError(error.detail) from None
        for entry in manifest["customModels"]:
            self.stdout.write(f"{entry['flowName']}: {entry['fileName']} sha256 {entry['sha256']}")
        self.stdout.write(
            f"Wrote {len(manifest['customModels'])} model(s) and manifest.json to {folder}"
        )
