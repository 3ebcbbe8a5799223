"""The demo installation that `bin/run` sets up: an admin, a demo app, a flow and real trained models."""

import json
import secrets
from io import BytesIO
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from registry import services as registry_services
from registry import training
from registry.models import App, Flow

from .roles import Role, role_groups_sync
from .services import api_token_create

DEMO_APP = "ContextSDK Demo"
DEMO_FLOW = "onboarding_upsell"
DEMO_FLOW_ID = 8362
DEMO_USERS = {
    "admin": None,  # superuser
    "pm": Role.PRODUCT_MANAGER,
    "ds": Role.DATA_SCIENTIST,
    "viewer": Role.VIEWER,
}


def _credentials_file(var_dir: Path) -> Path:
    return var_dir / "demo-credentials.json"


def demo_seed(*, var_dir: Path) -> dict:
    """Create what is missing of the demo; return the credentials (kept in var/ between runs)."""
    var_dir.mkdir(parents=True, exist_ok=True)
    path = _credentials_file(var_dir)
    credentials = json.loads(path.read_text()) if path.is_file() else {}
    role_groups_sync()
    with transaction.atomic():
        credentials.setdefault("password", secrets.token_urlsafe(12))
        _users(credentials["password"])
        if "api_token" not in credentials:
            admin = get_user_model().objects.get(username="admin")
            credentials["api_token"] = api_token_create(user=admin, name="demo")[1]
        app = App.objects.filter(name=DEMO_APP).first() or registry_services.app_create(
            name=DEMO_APP, bundle_identifiers=["com.krausefx.ContextCoreMLDemo"]
        )
        credentials["app_id"] = str(app.pk)
        if "sdk_key" not in credentials:
            credentials["sdk_key"] = registry_services.sdk_key_create(app=app, name="demo")[1]
        flow = Flow.objects.filter(
            app=app, name=DEMO_FLOW
        ).first() or registry_services.flow_create(
            app=app,
            name=DEMO_FLOW,
            flow_id=DEMO_FLOW_ID,
            positive_label="Purchased",
            signals={"input": "1.0.0"},
        )
        credentials["flow_id"] = str(flow.pk)
    models = _models(flow, var_dir)
    credentials["models"] = models
    credentials["rollout_id"] = _rollout(flow, models["challenger"])
    path.write_text(json.dumps(credentials, indent=2) + "\n")
    path.chmod(0o600)
    return credentials


def demo_rollout_summary(rollout_id: str) -> str:
    """One line on the demo's rollout as it is now: its state and each arm's share."""
    from rollout.models import Rollout
    from rollout.shares import percent_text

    rollout = Rollout.objects.prefetch_related("arms").get(pk=rollout_id)
    shares = ", ".join(f"{arm.name} at {percent_text(arm.share)}" for arm in rollout.arms.all())
    return f"Rollout {rollout.pk}: {rollout.get_state_display().lower()}, {shares}"


def _users(password: str) -> None:
    User = get_user_model()
    for username, role in DEMO_USERS.items():
        user = User.objects.filter(username=username).first()
        if user is None:
            if role is None:
                user = User.objects.create_superuser(username, f"{username}@example.com", password)
            else:
                user = User.objects.create_user(username, password=password, is_staff=True)
        if role is not None:
            user.groups.add(Group.objects.get(name=role.value))


def _models(flow: Flow, var_dir: Path) -> dict:
    """Train the baseline and a challenger on synthetic outcomes, as the ContextSDK notebook does."""
    from rollout.arms import BASELINE

    admin = get_user_model().objects.get(username="admin")
    made = {}
    for name, seed, bias in ((BASELINE, 0, 0.0), ("challenger", 1, 0.15)):
        rows = training.demo_rows(600, seed=seed, purchase_bias=bias)
        csv_path = var_dir / "demo" / f"{name}-outcomes.csv"
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        training.write_demo_csv(csv_path, rows)
        features, x, y = training.read_outcome_csv(csv_path)
        result = training.train_outcome_classifier(
            features, x, y, seed=seed, short_description=f"Demo {name} model"
        )
        version, _ = registry_services.model_version_upload(
            flow=flow,
            file=BytesIO(result.model_bytes),
            filename=f"{name}.mlmodel",
            notes=f"Demo {name}: RandomForest on {csv_path.name}",
            metrics=result.report,
            uploaded_by=admin,
        )
        made[name] = str(version.pk)
        if name == BASELINE and flow.baseline_id is None:
            registry_services.flow_baseline_set(
                flow=flow, model_version=version, actor="system", reason="demo set-up"
            )
    return made


def _rollout(flow: Flow, challenger_id: str) -> str:
    """Run the challenger at 5 % next to the baseline, as a product manager would start it."""
    from rollout import services as rollout_services
    from rollout.arms import challenger_name
    from rollout.models import Rollout

    if Rollout.objects.filter(flow=flow).exists():
        return str(Rollout.objects.filter(flow=flow).order_by("-created_at").first().pk)
    rollout = rollout_services.rollout_create(
        flow=flow,
        challengers=[{"model_id": challenger_id, "name": challenger_name(1)}],
        actor="system",
    )
    rollout = rollout_services.rollout_start(rollout=rollout, actor="system", reason="demo set-up")
    rollout = rollout_services.rollout_advance(
        rollout=rollout, actor="system", reason="demo set-up"
    )
    return str(rollout.pk)
