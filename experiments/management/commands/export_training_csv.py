from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from controlplane.errors import DomainError
from experiments.exports import training_columns, training_csv_write
from registry.selectors import flow_get


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"'{text}' is not a date: use YYYY-MM-DD.") from None


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    return names or None


class Command(BaseCommand):
    help = (
        "Write a flow's outcome events with their signals, from --since to --until (whole UTC "
        "days, both included), as a training CSV that train_model reads: the outcome column, "
        "then one column per numeric signal, sorted by name."
    )

    def add_arguments(self, parser):
        parser.add_argument("flow_id", help="The flow's id (UUID).")
        parser.add_argument("--since", required=True, help="First day, YYYY-MM-DD (UTC).")
        parser.add_argument("--until", required=True, help="Last day, YYYY-MM-DD (UTC).")
        parser.add_argument("--output", required=True, type=Path, help="The CSV file to write.")
        parser.add_argument(
            "--outcomes",
            help="Comma-separated outcome labels to learn from, e.g. Purchased,Dismissed "
            "(default: every outcome but model_error).",
        )
        parser.add_argument(
            "--signals",
            help="Comma-separated signal names to use as columns (default: every signal that "
            "is always a number or a boolean). Events missing one of them are skipped.",
        )
        parser.add_argument("--outcome-column", default="Outcome")

    def handle(self, *args, flow_id, since, until, output, outcomes, signals, **options):
        try:
            flow = flow_get(flow_id=flow_id)
        except DomainError as error:
            raise CommandError(error.detail) from None
        first, last = _day(since), _day(until)
        output = Path(output)  # call_command may pass it as text
        if last < first:
            raise CommandError("--until is before --since.")
        start = datetime.combine(first, time.min, tzinfo=UTC)
        end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
        outcomes, signals = _names(outcomes), _names(signals)
        if signals is None:
            signals, dropped = training_columns(flow=flow, start=start, end=end, outcomes=outcomes)
            if dropped:
                self.stderr.write(f"Left out signals that carry text: {', '.join(dropped)}")
            if not signals:
                raise CommandError(
                    f"No event of flow '{flow.name}' from {first} to {last} carries numeric "
                    "signals: there is nothing to train on."
                )
        try:
            with output.open("w", encoding="utf-8", newline="") as handle:
                result = training_csv_write(
                    flow=flow,
                    start=start,
                    end=end,
                    out=handle,
                    outcome_column=options["outcome_column"],
                    outcomes=outcomes,
                    signals=signals,
                )
        except (OSError, ValueError) as error:
            raise CommandError(str(error)) from None
        if result.skipped_missing:
            self.stderr.write(
                f"Skipped {result.skipped_missing} events missing one of the columns."
            )
        self.stdout.write(
            f"Wrote {result.rows} rows with columns {options['outcome_column']}, "
            f"{', '.join(result.columns)} to {output}"
        )
