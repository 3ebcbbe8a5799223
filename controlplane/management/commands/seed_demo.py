import json

from django.conf import settings
from django.core.management.base import BaseCommand

from controlplane.demo import demo_rollout_summary, demo_seed


class Command(BaseCommand):
    help = (
        "Create the demo users, app, flow and trained models that are missing; print credentials."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print the credentials as JSON."
        )

    def handle(self, *args, as_json: bool = False, **options):
        credentials = demo_seed(var_dir=settings.VAR_DIR)
        if as_json:
            self.stdout.write(json.dumps(credentials, indent=2))
            return
        self.stdout.write(f"Users admin, pm, ds, viewer — password: {credentials['password']}")
        self.stdout.write(f"Management API token (admin): {credentials['api_token']}")
        self.stdout.write(f"Demo app {credentials['app_id']}, SDK key: {credentials['sdk_key']}")
        self.stdout.write(f"Flow onboarding_upsell: {credentials['flow_id']}")
        self.stdout.write(demo_rollout_summary(credentials["rollout_id"]))
