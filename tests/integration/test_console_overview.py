"""The console's flows overview, model version page and chrome, through the admin's real views."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.utils import timezone

from experiments import readout
from experiments.judge import rollout_analyze
from experiments.models import Analysis
from registry import services as registry
from rollout import services as rollouts

from .builders import populate

pytestmark = pytest.mark.django_db

OVERVIEW = "/admin/registry/flow/"


@pytest.fixture
def as_role(client, django_user_model):
    """Log the test client in as a staff user holding one role."""
    from controlplane.roles import role_groups_sync

    def log_in(role: str):
        role_groups_sync()
        user = django_user_model.objects.create_user(username=role, is_staff=True)
        user.groups.add(Group.objects.get(name=role))
        client.force_login(user)
        return client

    return log_in


@pytest.fixture
def make_flow(trained_models):
    """A flow of an app with a baseline and a challenger uploaded, the baseline set."""
    apps = {}

    def make(name: str, *, app: str = "Demo Shop", number: int | None = None):
        if app not in apps:
            apps[app] = registry.app_create(name=app)
        flow = registry.flow_create(
            app=apps[app],
            name=name,
            flow_id=number or 1000 + len(name) * 37 + sum(map(ord, name)),
            positive_label="Purchased",
        )
        baseline, _ = registry.model_version_upload(
            flow=flow,
            file=trained_models["baseline"].open("rb"),
            filename="b.mlmodel",
            notes="gradient boosting, March data",
        )
        challenger, _ = registry.model_version_upload(
            flow=flow, file=trained_models["challenger"].open("rb"), filename="c.mlmodel"
        )
        registry.flow_baseline_set(flow=flow, model_version=baseline, actor="test")
        flow.refresh_from_db()
        return {"flow": flow, "baseline": baseline, "challenger": challenger}

    return make


def rollout_of(setup, stages=(50,), *, start=True, **options):
    rollout = rollouts.rollout_create(
        flow=setup["flow"],
        challengers=[{"model_id": str(setup["challenger"].pk), "stages": list(stages)}],
        actor="user:dana",
        planned_sample=4000,
        **options,
    )
    return rollouts.rollout_start(rollout=rollout, actor="user:dana") if start else rollout


def rows_of(html: str) -> dict[str, str]:
    """The overview's rows by flow name: the row's HTML."""
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", html, flags=re.S):
        name = re.search(r'<th class="field-name"><a [^>]*>([^<]+)</a>', row)
        if name:
            rows[name[1]] = row
    return rows


def cell(row: str, field: str) -> str:
    found = re.search(rf'<td class="field-{field}">(.*?)</td>', row, flags=re.S)
    assert found, f"no {field} column"
    return found[1]


def text(html: str) -> str:
    """What a person reads: no tags, and no SVG (its title is the chart's summary)."""
    html = re.sub(r"<svg.*?</svg>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


# --- the overview ----------------------------------------------------------------------------


def test_overview__one_row_per_flow__stage_badge_lift_guardrails_last_action(as_role, make_flow):
    make_flow("empty_flow")
    draft = make_flow("drafted")
    rollout_of(draft, (5, 20, 50), start=False)
    harmful = make_flow("harmful")
    failing = rollout_of(harmful, (5, 50))
    rollouts.rollout_advance(rollout=failing, actor="user:dana")
    failing.refresh_from_db()
    populate(failing, "baseline", 3000, 600, errors=60)
    populate(failing, "challenger-1", 3000, 300, errors=60)
    judged = rollout_analyze(rollout=failing, act=False)
    stopped = make_flow("stopped")
    rolled = rollout_of(stopped)
    populate(rolled, "baseline", 3000, 600)
    populate(rolled, "challenger-1", 3000, 300)
    rollout_analyze(rollout=rolled, act=True)
    held = make_flow("held")
    paused = rollout_of(held, (5, 20, 50))
    rollouts.rollout_pause(rollout=paused, actor="user:pat", reason="support ticket #12")

    response = as_role("product_manager").get(OVERVIEW)

    assert response.status_code == 200
    html = response.content.decode()
    rows = rows_of(html)
    assert set(rows) == {"empty_flow", "drafted", "harmful", "stopped", "held"}
    # Baseline: the short id and the notes.
    baseline = harmful["baseline"]
    assert baseline.pk.hex[-8:] in cell(rows["harmful"], "baseline_model")
    assert "gradient boosting, March data" in cell(rows["harmful"], "baseline_model")
    # Stage "index / stages · share" of the active rollout.
    assert text(cell(rows["harmful"], "stage")) == "2/2 · 50 %"
    assert text(cell(rows["held"], "stage")) == "1/3 · 5 %"
    assert text(cell(rows["drafted"], "stage")) == "not started · 3 stages"
    # The badge, with its sentence on hover: the recommendation's own words.
    badges = {name: text(cell(row, "state")) for name, row in rows.items()}
    assert badges == {
        "empty_flow": readout.NO_ROLLOUT,
        "drafted": readout.DRAFT,
        "harmful": readout.GUARDRAIL_FAILING,
        "stopped": readout.ROLLED_BACK,
        "held": readout.PAUSED,
    }
    sentence = readout.recommendation(judged.body).sentence
    assert f'title="{sentence}"' in cell(rows["harmful"], "state")
    assert "automatically" in cell(rows["stopped"], "state")
    assert "Paused by pat" in cell(rows["held"], "state")
    assert "support ticket #12" in cell(rows["held"], "state")
    # The primary lift: the readout's difference text, the chip, an interval bar around zero.
    primary = next(a for a in judged.body["arms"] if a["arm"] == "challenger-1")["metrics"][
        "conversion"
    ]
    lift = cell(rows["harmful"], "primary_lift")
    value, _, interval = readout.difference_text(primary, proportion=True).partition(" (")
    assert text(lift) == f"{value} ✗ Worse ({interval}"
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="interval-cell tone-bad"' in lift
    assert 'role="img"' in lift and "aria-label=" in lift
    assert text(cell(rows["empty_flow"], "primary_lift")) == "—"
    # Guardrails: model errors are equal, so clean, though the primary metric is worse.
    assert text(cell(rows["harmful"], "guardrails")) == "✓ clean"
    # The last action: what, who, when (with its zone).
    assert re.fullmatch(
        r"pause by pat \d+ \w+ \d{4}, \d\d:\d\d UTC", text(cell(rows["held"], "last_action"))
    )
    assert text(cell(rows["stopped"], "last_action")).startswith("rollback by Cohort (automatic)")
    # The legend below the table, every state with its sentence.
    legend = html[html.index('class="console-legend"') :]
    for label, _, meaning in readout.STATE_LEGEND:
        assert label in legend and meaning.replace("'", "&#x27;") in legend


def test_overview__days_left__from_growth_between_first_and_last_analysis(as_role, make_flow):
    setup = make_flow("growing")
    rollout = rollout_of(setup)
    populate(rollout, "baseline", 200, 20)
    populate(rollout, "challenger-1", 200, 20)
    first = rollout_analyze(rollout=rollout, act=False)
    day_before = timezone.now() - timedelta(days=1)
    Analysis.objects.filter(pk=first.pk).update(
        computed_at=day_before, body={**first.body, "computed_at": day_before.isoformat()}
    )
    populate(rollout, "baseline", 200, 20, start=200)
    populate(rollout, "challenger-1", 200, 20, start=200)
    last = rollout_analyze(rollout=rollout, act=False)
    first.refresh_from_db()
    expected = readout.days_left(first.body, last.body)

    rows = rows_of(as_role("viewer").get(OVERVIEW).content.decode())

    needed = last.body["power"]["devices_per_arm_needed"]
    assert needed > 400, "the power calculation must ask for more than the arms have"
    assert expected is not None and expected >= 1
    assert text(cell(rows["growing"], "time_left")) == readout.days_left_text(expected)
    assert text(cell(rows["growing"], "time_left")).endswith("left (estimate)")


def test_overview__filters_by_app_and_state(as_role, make_flow):
    shop = make_flow("upsell", app="Demo Shop")
    news = make_flow("paywall", app="News")
    make_flow("quiet", app="News")
    rollout_of(shop)
    paused = rollout_of(news)
    rollouts.rollout_pause(rollout=paused, actor="user:pat")
    client = as_role("product_manager")

    by_app = rows_of(client.get(OVERVIEW, {"app__id__exact": news["flow"].app_id}).content.decode())
    by_state = rows_of(client.get(OVERVIEW, {"state": "paused"}).content.decode())
    no_rollout = rows_of(client.get(OVERVIEW, {"state": "none"}).content.decode())
    both = rows_of(
        client.get(
            OVERVIEW, {"state": "ramping", "app__id__exact": news["flow"].app_id}
        ).content.decode()
    )

    counted = client.get(OVERVIEW, {"_facets": "True"}).content.decode()

    assert set(by_app) == {"paywall", "quiet"}
    assert re.search(r">\s*Paused \(1\)\s*<", counted)
    assert re.search(r">\s*Ramping \(1\)\s*<", counted)
    assert re.search(r">\s*No rollout \(1\)\s*<", counted)
    assert set(by_state) == {"paywall"}
    assert set(no_rollout) == {"quiet"}
    assert both == {}


def test_overview__fifty_flows__a_fixed_handful_of_queries(
    as_role, make_flow, django_assert_max_num_queries, django_assert_num_queries
):
    client = as_role("product_manager")
    client.get(OVERVIEW)  # the session and the user's roles are read once, as in any request

    def build(count, start):
        for i in range(start, start + count):
            setup = make_flow(f"flow_{i}", number=i + 1)
            rollout = rollout_of(setup)
            populate(rollout, "baseline", 30, 3)
            populate(rollout, "challenger-1", 30, 3)
            rollout_analyze(rollout=rollout, act=False)
            if i % 2:
                rollout_analyze(rollout=rollout, act=False)
            if i % 3 == 0:
                rollouts.rollout_pause(rollout=rollout, actor="user:pat")

    build(3, 0)
    with django_assert_max_num_queries(20) as few:
        assert client.get(OVERVIEW).status_code == 200
    build(47, 3)

    with django_assert_num_queries(len(few.captured_queries)):
        response = client.get(OVERVIEW)

    assert len(rows_of(response.content.decode())) == 50


# --- the landing page, the 403 page, the sidebar, times ---------------------------------------


@pytest.mark.parametrize(
    ("role", "lands_on"),
    [("product_manager", OVERVIEW), ("viewer", OVERVIEW), ("data_scientist", None)],
)
def test_admin_home__product_managers_and_viewers_land_on_the_overview(as_role, role, lands_on):
    response = as_role(role).get("/admin/")

    if lands_on:
        assert response.status_code == 302 and response["Location"] == lands_on
    else:
        assert response.status_code == 200
        assert "<title>Console | Cohort</title>" in response.content.decode()


def test_admin_home__after_login__product_manager_on_the_overview(client, django_user_model):
    from controlplane.roles import role_groups_sync

    role_groups_sync()
    user = django_user_model.objects.create_user("pm", password="pw-secret-1", is_staff=True)
    user.groups.add(Group.objects.get(name="product_manager"))

    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": "pm", "password": "pw-secret-1"},
        follow=True,
    )

    assert response.redirect_chain[-1][0] == OVERVIEW
    assert "Flows overview" in response.content.decode()


def test_forbidden__in_the_admin__styled_page_with_the_reason_and_a_way_back(as_role):
    response = as_role("viewer").get(
        "/admin/registry/modelversion/add/", HTTP_REFERER="http://testserver" + OVERVIEW
    )

    html = response.content.decode()
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")
    assert "You need the product manager role to do this." in html
    assert "Your role: Viewer." in html
    assert f'href="http://testserver{OVERVIEW}"' in html
    assert 'id="user-tools"' in html  # the admin's chrome, not a bare page


def test_forbidden__under_the_api__still_json(make_api_client):
    response = make_api_client("viewer").post("/api/v1/apps", {"name": "x"}, format="json")

    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"


@pytest.mark.parametrize("role", ["viewer", "data_scientist", "product_manager"])
def test_sidebar__periodic_tasks__admins_only(as_role, role):
    client = as_role(role)
    granted = Permission.objects.filter(
        group__name=role, content_type__app_label__in=["django_celery_beat", "axes"]
    )

    html = client.get("/admin/experiments/analysis/").content.decode()

    assert not granted.exists()
    assert "Periodic tasks" not in html and "Access attempts" not in html
    assert client.get("/admin/django_celery_beat/periodictask/").status_code == 403
    assert client.get("/admin/axes/accessattempt/").status_code == 403


def test_sidebar__admin_role__sees_periodic_tasks_and_lockouts(as_role):
    html = as_role("admin").get("/admin/").content.decode()

    assert "Periodic tasks" in html
    assert "Access attempts" in html  # to unlock someone locked out


def test_times__carry_their_zone_on_rollout_and_analysis_pages(as_role, make_flow):
    setup = make_flow("timed")
    rollout = rollout_of(setup)
    populate(rollout, "baseline", 50, 5)
    populate(rollout, "challenger-1", 50, 5)
    analysis = rollout_analyze(rollout=rollout, act=False)
    client = as_role("product_manager")

    pages = {
        "analysis list": client.get("/admin/experiments/analysis/"),
        "analysis": client.get(f"/admin/experiments/analysis/{analysis.pk}/change/"),
        "audit log": client.get("/admin/rollout/rolloutevent/"),
        "rollout list": client.get("/admin/rollout/rollout/"),
    }

    stamp = re.compile(r"\d\d:\d\d(:\d\d)? UTC")
    for name, response in pages.items():
        assert response.status_code == 200, name
        assert stamp.search(text(response.content.decode())), name


# --- the model version page --------------------------------------------------------------------


def test_model_page__what_the_model_is_and_where_it_ran(as_role, make_flow):
    setup = make_flow("modelled")
    rollout = rollout_of(setup)
    version = setup["challenger"]

    html = as_role("viewer").get(f"/admin/registry/modelversion/{version.pk}/change/")
    page = html.content.decode()

    for heading in ("Inputs and outputs", "Offline metrics", "Rollouts that used it"):
        assert heading in page
    assert version.sha256 in page
    assert f"({version.size:,} bytes)" in page
    assert f"{version.min_sdk_version} and later" in page
    assert f'href="/admin/rollout/rollout/{rollout.pk}/change/"' in page
    assert "Running as a challenger" in text(page)
    assert version.file_name in page and "console-download" in page
    assert "Make baseline" not in page  # a viewer sees no action


def test_model_page__make_baseline__button_to_the_confirmed_action(as_role, make_flow):
    setup = make_flow("rebased")
    version = setup["challenger"]
    client = as_role("product_manager")
    page = client.get(f"/admin/registry/modelversion/{version.pk}/change/").content.decode()
    form = re.search(r'<form method="post" action="([^"]+)" class="console-make-baseline">', page)
    assert form, "a product manager gets the button"

    confirm = client.post(form[1], {"action": "make_baseline", "_selected_action": str(version.pk)})
    done = client.post(
        form[1],
        {
            "action": "make_baseline",
            "_selected_action": str(version.pk),
            "confirm": "yes",
            "reason": "won the March rollout",
        },
    )

    assert confirm.status_code == 200
    assert "Make model" in confirm.content.decode() and "the baseline" in confirm.content.decode()
    assert done.status_code == 302
    setup["flow"].refresh_from_db()
    assert setup["flow"].baseline_id == version.pk
    change = setup["flow"].baseline_changes.latest("changed_at")
    assert change.reason == "won the March rollout" and change.actor == "user:product_manager"


def test_model_page__data_scientist_or_baseline_already__disabled_with_the_reason(
    as_role, make_flow
):
    setup = make_flow("reasons")
    scientist = as_role("data_scientist")

    other = scientist.get(f"/admin/registry/modelversion/{setup['challenger'].pk}/change/")

    assert "disabled" in other.content.decode()
    assert "Only product managers and admins set baselines." in other.content.decode()

    scientist.logout()
    pm = as_role("product_manager")
    current = pm.get(f"/admin/registry/modelversion/{setup['baseline'].pk}/change/")
    assert "This model is its flow&#x27;s baseline already." in current.content.decode()


def test_model_page__viewer_posting_the_action__nothing_changes(as_role, make_flow):
    setup = make_flow("guarded")
    client = as_role("viewer")

    client.post(
        "/admin/registry/modelversion/",
        {
            "action": "make_baseline",
            "_selected_action": str(setup["challenger"].pk),
            "confirm": "yes",
            "reason": "sneaky",
        },
    )

    setup["flow"].refresh_from_db()
    assert setup["flow"].baseline_id == setup["baseline"].pk
