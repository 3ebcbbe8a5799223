"""Admin of the registry, for product managers and data scientists: every change goes through services."""

import json

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join

from controlplane.actors import actor_for_user
from controlplane.admin_mixins import ReadOnlyAdmin, ServiceAdminMixin, ServiceFormMixin
from controlplane.errors import DomainError
from controlplane.roles import BASELINE_SETTERS, user_has_role

from . import services
from .interfaces import InvalidInterface, interface_validate, signals_validate
from .models import App, BaselineChange, Flow, ModelVersion, SdkKey
from .storage import model_file_url


def _json_block(value) -> str:
    return format_html("<pre class='cohort-json'>{}</pre>", json.dumps(value, indent=2))


def _features_table(features) -> str:
    if not features:
        return "—"
    rows = format_html_join(
        "",
        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
        (
            (
                f.get("name"),
                f.get("type"),
                ", ".join(
                    f"{k}={v}" for k, v in f.items() if k not in {"name", "type", "description"}
                ),
            )
            for f in features
        ),
    )
    return format_html(
        "<table class='cohort-features'><thead><tr><th>name</th><th>type</th><th>details</th>"
        "</tr></thead><tbody>{}</tbody></table>",
        rows,
    )


class SdkKeyInline(admin.TabularInline):
    model = SdkKey
    extra = 0
    fields = ("prefix", "name", "created_at", "revoked_at")
    readonly_fields = fields
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False


class AppAdminForm(ServiceFormMixin, forms.ModelForm):
    class Meta:
        model = App
        fields = ("name", "bundle_identifiers")

    def clean_bundle_identifiers(self):
        try:
            return services.bundle_identifiers_validate(self.cleaned_data["bundle_identifiers"])
        except DomainError as error:
            raise forms.ValidationError(error.detail) from None

    def service_call(self, cleaned_data):
        if self.instance._state.adding:
            return services.app_create(
                name=cleaned_data["name"], bundle_identifiers=cleaned_data["bundle_identifiers"]
            )
        return services.app_update(
            app=self.instance,
            name=cleaned_data["name"],
            bundle_identifiers=cleaned_data["bundle_identifiers"],
        )


@admin.register(App)
class AppAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = AppAdminForm
    list_display = ("name", "id", "bundle_list", "flow_count", "created_at")
    search_fields = ("name", "id")
    readonly_fields = ("id", "created_at")
    inlines = [SdkKeyInline]
    actions = ["create_sdk_key"]

    @admin.display(description="bundle identifiers")
    def bundle_list(self, obj):
        return ", ".join(obj.bundle_identifiers)

    @admin.display(description="flows")
    def flow_count(self, obj):
        return obj.flows.count()

    def service_delete(self, obj):
        services.app_delete(app=obj)

    @admin.action(description="Create an SDK key (shown once)", permissions=["change"])
    def create_sdk_key(self, request, queryset):
        for app in queryset:
            _, plaintext = services.sdk_key_create(app=app, name=f"admin:{request.user}")
            self.message_user(
                request,
                f"New SDK key for {app.name}: {plaintext} — copy it now, it is not shown again.",
                messages.WARNING,
            )


class SdkKeyNameForm(ServiceFormMixin, forms.ModelForm):
    class Meta:
        model = SdkKey
        fields = ("name",)

    def service_call(self, cleaned_data):
        return services.sdk_key_rename(key=self.instance, name=cleaned_data["name"])


@admin.register(SdkKey)
class SdkKeyAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = SdkKeyNameForm
    list_display = ("prefix", "app", "name", "created_at", "revoked_at")
    list_filter = ("app", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("prefix", "name", "app__name")
    readonly_fields = ("app", "prefix", "created_at", "revoked_at")
    fields = ("app", "prefix", "name", "created_at", "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # keys are made by the app's action, which shows the plaintext once

    def service_delete(self, obj):
        services.sdk_key_delete(key=obj)

    @admin.action(description="Revoke the selected SDK keys", permissions=["change"])
    def revoke(self, request, queryset):
        for key in queryset:
            services.sdk_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)


class FlowAdminForm(ServiceFormMixin, forms.ModelForm):
    class Meta:
        model = Flow
        fields = (
            "app", "name", "flow_id", "positive_label", "attribution_window_hours",
            "interface", "signals",
        )  # fmt: skip

    def clean_interface(self):
        interface = self.cleaned_data.get("interface")
        try:
            return interface_validate(interface) if interface is not None else None
        except InvalidInterface as error:
            raise forms.ValidationError(str(error)) from None

    def clean_signals(self):
        try:
            return signals_validate(self.cleaned_data.get("signals"))
        except InvalidInterface as error:
            raise forms.ValidationError(str(error)) from None

    def service_call(self, cleaned_data):
        # The instance carries the cleaned values (app, name and flow_id only when adding).
        flow = self.instance
        if flow._state.adding:
            return services.flow_create(
                app=flow.app,
                name=flow.name,
                flow_id=flow.flow_id,
                positive_label=flow.positive_label,
                interface=flow.interface,
                signals=flow.signals,
                attribution_window_hours=flow.attribution_window_hours,
            )
        return services.flow_update(
            flow=flow,
            positive_label=flow.positive_label,
            interface=flow.interface,
            signals=flow.signals,
            attribution_window_hours=flow.attribution_window_hours,
        )


@admin.register(Flow)
class FlowAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = FlowAdminForm
    list_display = ("name", "app", "flow_id", "positive_label", "baseline_link", "model_count")
    list_filter = ("app",)
    search_fields = ("name", "app__name", "=flow_id")
    list_select_related = ("app", "baseline")
    readonly_fields = ("id", "baseline_link", "interface_table", "created_at")
    autocomplete_fields = ("app",)

    def get_fields(self, request, obj=None):
        if obj is None:
            return (
                "app", "name", "flow_id", "positive_label", "attribution_window_hours",
                "interface", "signals",
            )  # fmt: skip
        return (
            "id", "app", "name", "flow_id", "positive_label", "attribution_window_hours",
            "baseline_link", "interface_table", "interface", "signals", "created_at",
        )  # fmt: skip

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("id", "app", "name", "flow_id", "baseline_link", "interface_table", "created_at")

    @admin.display(description="baseline")
    def baseline_link(self, obj):
        if obj.baseline_id is None:
            return "— (devices run the model bundled in the app)"
        return format_html(
            "<a href='../../modelversion/{}/change/'>{}</a>", obj.baseline_id, obj.baseline_id
        )

    @admin.display(description="models")
    def model_count(self, obj):
        return obj.model_versions.count()

    @admin.display(description="interface (inputs the SDK sends)")
    def interface_table(self, obj):
        return _features_table((obj.interface or {}).get("inputs", []))

    def service_delete(self, obj):
        services.flow_delete(flow=obj)


class ModelVersionUploadForm(ServiceFormMixin, forms.ModelForm):
    file = forms.FileField(help_text="A .mlmodel file, or an .mlpackage zipped.")
    metrics = forms.JSONField(required=False, initial=dict, help_text="Offline metrics (JSON).")

    class Meta:
        model = ModelVersion
        fields = ("flow", "min_sdk_version", "max_sdk_version", "notes")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["min_sdk_version"].required = False
        self.fields[
            "min_sdk_version"
        ].help_text = "Leave empty to derive it from the flow's signal catalog."
        self.created = False

    def service_call(self, cleaned_data):
        upload = cleaned_data["file"]
        version, self.created = services.model_version_upload(
            flow=cleaned_data["flow"],
            file=upload,
            filename=upload.name,
            min_sdk_version=cleaned_data.get("min_sdk_version") or None,
            max_sdk_version=cleaned_data.get("max_sdk_version") or None,
            notes=cleaned_data.get("notes") or "",
            metrics=cleaned_data.get("metrics") or {},
            uploaded_by=self.request.user if self.request else None,
        )
        return version


class ModelVersionNotesForm(ServiceFormMixin, forms.ModelForm):
    class Meta:
        model = ModelVersion
        fields = ("notes",)

    def service_call(self, cleaned_data):
        return services.model_version_notes_set(
            model_version=self.instance, notes=cleaned_data["notes"]
        )


class BaselineConfirmForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)


@admin.register(ModelVersion)
class ModelVersionAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = ModelVersionNotesForm
    list_display = (
        "id", "flow", "model_type", "size", "min_sdk_version", "is_baseline", "uploaded_by", "created_at",
    )  # fmt: skip
    list_filter = ("flow__app", "flow", "model_type", "format")
    search_fields = ("id", "sha256", "notes", "flow__name")
    list_select_related = ("flow", "flow__app", "uploaded_by")
    date_hierarchy = "created_at"
    actions = ["make_baseline"]
    readonly_fields = (
        "id", "flow", "download", "sha256", "size", "format", "original_filename", "spec_version",
        "model_type", "structure", "inputs_table", "outputs_table", "labels", "warnings_list",
        "metadata_block", "metrics_table", "min_sdk_version", "max_sdk_version", "uploaded_by",
        "created_at",
    )  # fmt: skip
    fields = (*readonly_fields, "notes")

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ModelVersionUploadForm
            kwargs["fields"] = None
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("flow", "file", "min_sdk_version", "max_sdk_version", "notes", "metrics")
        return self.fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)  # the form's service saved it
        if not change and not form.created:
            self.message_user(
                request, f"These bytes are model {obj.pk} of this flow already.", messages.INFO
            )

    def has_delete_permission(self, request, obj=None):
        return False  # versions are immutable and may be referenced by devices and rollouts

    @admin.display(boolean=True, description="baseline")
    def is_baseline(self, obj):
        return obj.flow.baseline_id == obj.pk

    @admin.display(description="file")
    def download(self, obj):
        url = model_file_url(obj.storage_key, base_url="/")
        return format_html("<a href='{}'>{}</a>", url, obj.file_name)

    @admin.display(description="structure")
    def structure(self, obj):
        subs = obj.description.get("sub_models") or []
        return obj.model_type + (" > " + " > ".join(subs) if subs else "")

    @admin.display(description="inputs")
    def inputs_table(self, obj):
        return _features_table(obj.description.get("inputs", []))

    @admin.display(description="outputs")
    def outputs_table(self, obj):
        return _features_table(obj.description.get("outputs", []))

    @admin.display(description="class labels")
    def labels(self, obj):
        return ", ".join(obj.description.get("class_labels", [])) or "— (regressor)"

    @admin.display(description="warnings")
    def warnings_list(self, obj):
        warnings = obj.description.get("warnings", [])
        if not warnings:
            return "none"
        return format_html(
            "<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((w,) for w in warnings))
        )

    @admin.display(description="metadata")
    def metadata_block(self, obj):
        return _json_block(obj.description.get("metadata", {}))

    @admin.display(description="offline metrics")
    def metrics_table(self, obj):
        metrics = obj.metrics or {}
        per_class = {
            label: values
            for label, values in metrics.items()
            if isinstance(values, dict) and "precision" in values
        }
        if not per_class:
            return _json_block(metrics) if metrics else "—"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{:.3f}</td><td>{:.3f}</td><td>{:.3f}</td><td>{}</td></tr>",
            (
                (
                    label,
                    v.get("precision", 0),
                    v.get("recall", 0),
                    v.get("f1-score", 0),
                    int(v.get("support", 0)),
                )
                for label, v in per_class.items()
            ),
        )
        accuracy = metrics.get("accuracy")
        return format_html(
            "<table class='cohort-metrics'><thead><tr><th></th><th>precision</th><th>recall</th>"
            "<th>f1</th><th>support</th></tr></thead><tbody>{}</tbody></table>{}",
            rows,
            format_html("<p>accuracy {:.3f}</p>", accuracy) if accuracy is not None else "",
        )

    @admin.action(
        description="Make the selected model its flow's baseline…", permissions=["baseline"]
    )
    def make_baseline(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model.", messages.ERROR)
            return None
        version = queryset.select_related("flow").get()
        form = BaselineConfirmForm(request.POST if "confirm" in request.POST else None)
        if "confirm" in request.POST and form.is_valid():
            try:
                services.flow_baseline_set(
                    flow=version.flow,
                    model_version=version,
                    actor=actor_for_user(request.user),
                    reason=form.cleaned_data["reason"],
                )
            except DomainError as error:
                self.message_user(request, error.detail, messages.ERROR)
                return None
            self.message_user(
                request,
                f"Model {version.pk} is now the baseline of {version.flow}.",
                messages.SUCCESS,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Change the baseline",
            "version": version,
            "current": version.flow.baseline_id,
            "form": form,
            "queryset": queryset,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/registry/confirm_baseline.html", context)

    def has_baseline_permission(self, request):
        return user_has_role(request.user, BASELINE_SETTERS)


@admin.register(BaselineChange)
class BaselineChangeAdmin(ReadOnlyAdmin):
    list_display = ("flow", "previous", "model_version", "actor", "reason", "changed_at")
    list_filter = ("flow__app", "flow")
    search_fields = ("actor", "reason", "flow__name")
    list_select_related = ("flow", "flow__app")
