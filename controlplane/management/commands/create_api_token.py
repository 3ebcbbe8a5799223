from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from controlplane.services import api_token_create_for_username


class Command(BaseCommand):
    help = "Create a management API token for a user and print it (it is shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="What the token is for, e.g. 'ci'.")

    def handle(self, *args, username, name, **options):
        try:
            _, plaintext = api_token_create_for_username(username=username, name=name)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named '{username}'.") from None
        self.stdout.write(plaintext)
