from io import BytesIO
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from controlplane.actors import actor_for_user
from controlplane.errors import DomainError
from registry import selectors, services, training


class Command(BaseCommand):
    help = (
        "Train a RandomForest on a CSV of outcomes and signals (columns like 'Outcome, Battery "
        "Level, Phone Charging?'), convert it to Core ML, and register it on a flow and/or write "
        "the .mlmodel file. The classification report on a held-out split becomes the version's "
        "offline metrics."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "csv", type=Path, help="CSV with an Outcome column and numeric signals."
        )
        target = parser.add_argument_group("where the model goes (at least one)")
        target.add_argument("--flow", help="Flow id (UUID) to register the model on.")
        target.add_argument("--app", help="App name, with --flow-name.")
        target.add_argument("--flow-name", help="Flow name, with --app.")
        target.add_argument("--output", type=Path, help="Also write the .mlmodel file here.")
        parser.add_argument("--outcome-column", default="Outcome")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--trees", type=int, default=100)
        parser.add_argument("--test-size", type=float, default=0.2)
        parser.add_argument("--notes", default="")
        parser.add_argument("--description", default="Trained by Cohort train_model")
        parser.add_argument("--min-sdk-version")
        parser.add_argument("--uploaded-by", help="Username recorded as the uploader.")
        parser.add_argument(
            "--set-baseline", action="store_true", help="Make the new model the flow's baseline."
        )

    def handle(self, *args, **options):
        flow = self._flow(options)
        if flow is None and options["output"] is None:
            raise CommandError(
                "Say where the model goes: --flow, --app with --flow-name, or --output."
            )
        try:
            names, rows, labels = training.read_outcome_csv(
                options["csv"], outcome_column=options["outcome_column"]
            )
            result = training.train_outcome_classifier(
                names,
                rows,
                labels,
                seed=options["seed"],
                n_estimators=options["trees"],
                test_size=options["test_size"],
                short_description=options["description"],
            )
        except (OSError, ValueError) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"Trained on {result.report['n_train']} rows, tested on {result.report['n_test']}: "
            f"accuracy {result.report['accuracy']:.3f}"
        )
        if options["output"] is not None:
            options["output"].write_bytes(result.model_bytes)
            self.stdout.write(f"Wrote {options['output']}")
        if flow is not None:
            self._register(flow, result, options)

    def _flow(self, options):
        try:
            if options["flow"]:
                return selectors.flow_get(flow_id=options["flow"])
            if options["app"] or options["flow_name"]:
                if not (options["app"] and options["flow_name"]):
                    raise CommandError("--app and --flow-name go together.")
                return selectors.flow_get_by_name(
                    app_name=options["app"], flow_name=options["flow_name"]
                )
        except DomainError as error:
            raise CommandError(error.detail) from None
        return None

    def _register(self, flow, result, options):
        user = None
        if options["uploaded_by"]:
            user = get_user_model().objects.filter(username=options["uploaded_by"]).first()
            if user is None:
                raise CommandError(f"No user named '{options['uploaded_by']}'.")
        try:
            version, created = services.model_version_upload(
                flow=flow,
                file=BytesIO(result.model_bytes),
                filename=f"{flow.name}.mlmodel",
                min_sdk_version=options["min_sdk_version"],
                notes=options["notes"],
                metrics=result.report,
                uploaded_by=user,
            )
            if options["set_baseline"]:
                actor = actor_for_user(user) if user else "command:train_model"
                services.flow_baseline_set(
                    flow=flow,
                    model_version=version,
                    actor=actor,
                    reason="train_model --set-baseline",
                )
        except DomainError as error:
            raise CommandError(error.detail) from None
        state = "Registered" if created else "Already registered"
        self.stdout.write(f"{state} model {version.pk} on flow {flow} (sha256 {version.sha256})")
