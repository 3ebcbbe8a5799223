import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from rollout.signing import key_id_of, private_key_from_text, public_key_text


class Command(BaseCommand):
    help = (
        "Signing keys for assignments: 'new' prints a new Ed25519 key for "
        "ASSIGNMENT_SIGNING_KEY and its public key; 'show' prints the configured key's public "
        "key and id, which apps embed to verify (docs/sdk.md, 'Signed assignments')."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["new", "show"])
        parser.add_argument(
            "--setting-only",
            action="store_true",
            help="With 'new': print only the ASSIGNMENT_SIGNING_KEY=... line (for a .env file).",
        )

    def handle(self, *args, action: str, setting_only: bool = False, **options):
        if action == "new":
            key = Ed25519PrivateKey.generate()
            seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            self.stdout.write(f"ASSIGNMENT_SIGNING_KEY={base64.b64encode(seed).decode()}")
            if setting_only:
                return
        else:
            if not settings.ASSIGNMENT_SIGNING_KEY:
                raise CommandError("ASSIGNMENT_SIGNING_KEY is not set: assignments are unsigned.")
            key = private_key_from_text(settings.ASSIGNMENT_SIGNING_KEY)
        public = key.public_key()
        self.stdout.write(f"key id: {key_id_of(public)}")
        self.stdout.write(f"public key (base64url, 32 bytes): {public_key_text(public)}")
