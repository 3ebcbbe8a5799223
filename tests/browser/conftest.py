"""A real headless Chromium (Debian's) driven by Playwright against the live test server."""

import os
import shutil

import pytest

# Playwright's sync API runs an event loop in this thread; Django's ORM calls in the same
# thread (fixtures) are still synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Chromium is not installed; bin/test installs Debian's chromium package.")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def login(page, django_user_model, transactional_db):
    """Log a user with a role into the admin through its login form."""
    from django.contrib.auth.models import Group

    from controlplane.roles import role_groups_sync

    def log_in(role: str):
        role_groups_sync()
        if role == "admin":
            django_user_model.objects.create_superuser(role, f"{role}@example.com", "pw-secret-1")
        else:
            user = django_user_model.objects.create_user(
                role, password="pw-secret-1", is_staff=True
            )
            user.groups.add(Group.objects.get(name=role))
        page.goto("/admin/login/")
        page.fill("#id_username", role)
        page.fill("#id_password", "pw-secret-1")
        page.click("input[type=submit]")
        page.wait_for_selector("#user-tools")
        return page

    return log_in


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep a screenshot and the HTML of a failed browser test, to see what the person saw."""
    outcome = yield
    report = outcome.get_result()
    page = item.funcargs.get("page") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and page is not None:
        folder = item.config.rootpath / "var" / "browser-failures"
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{item.name}.png"), full_page=True)
        (folder / f"{item.name}.html").write_text(page.content())


@pytest.fixture
def console_errors(page) -> list[str]:
    """Errors the browser reports (console and uncaught); tests assert there were none."""
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors
